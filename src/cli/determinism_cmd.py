"""`check-determinism`: train a short run twice and label the setup bitwise / within tolerance / nondeterministic.

Exit codes: 0 bitwise or within tolerance, 1 nondeterministic, 2 bad input.
"""

import argparse

from src.cli.common_args import add_config_and_task, subtask_of

HELP = "train a 1-epoch run twice (temporary dirs) and report whether this setup is bitwise reproducible"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (HELP + ". Each training runs in a fresh process; its run dir and registry are temporary "
                          "and deleted afterwards. Use small data: the check trains on what you pass. Exit 0: "
                          "bitwise or within tolerance; 1: nondeterministic; 2: bad input.")
    add_config_and_task(parser)
    parser.add_argument("--train-data", required=True, help="training split (as for train; keep it small)")
    parser.add_argument("--val-data", required=True, help="validation split (as for train)")
    parser.add_argument("--seed", type=int, help="random seed (default: as train resolves it)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per training (default 1); the config is "
                        "not changed, training stops after this epoch")
    parser.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance on metrics (default 1e-6)")
    parser.add_argument("--atol", type=float, default=0.0, help="absolute tolerance on metrics (default 0)")
    parser.add_argument("--record", metavar="RUN", help="store the result as determinism_check in this run's "
                        "metadata.yaml (run id or run dir)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    import json

    from src.cli.reproduce_cmd import stdout_to_stderr
    from src.pipelines.determinism_check import DeterminismRequest, check_determinism, exit_code, format_report

    request = DeterminismRequest(config_path=args.config, task=args.task, subtask=subtask_of(args),
                                 train_data=args.train_data, val_data=args.val_data, data_yaml=args.data_yaml,
                                 overrides=args.config_override, seed=args.seed, epochs=args.epochs,
                                 rtol=args.rtol, atol=args.atol)
    if not args.json:
        report = check_determinism(request, record_run=args.record)
        print(format_report(report))
        return exit_code(report)
    with stdout_to_stderr():
        report = check_determinism(request, record_run=args.record)
    print(json.dumps(report, indent=2, default=str))
    return exit_code(report)
