"""`reproduce RUN`: re-train a run from its recorded config, seed and data; verify the result.

Also `scripts/reproduce.py`. Exit codes: 0 bit-exact or within tolerance, 1 diverged, 2 refused (code/data
changed) or bad input.
"""

import argparse
import contextlib

HELP = "re-train a past run from what it recorded and check the result is the same (bit-exact / within tolerance)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (HELP + ". Before training, the recorded code, data fingerprints, packages, device and "
                          "determinism settings are compared with the current ones. Exit 0: bit-exact or within "
                          "tolerance; 1: diverged; 2: refused or bad input.")
    parser.add_argument("run", metavar="RUN", help="run id (under STREET_SCENE_OUTPUT_DIR, default ./outputs) "
                        "or run directory")
    parser.add_argument("--epochs", type=int, metavar="K", help="re-run only the first K epochs (same schedule "
                        "as the full run) and compare with the run's checkpoint_epoch_K.pth")
    parser.add_argument("--allow-data-change", action="store_true",
                        help="re-train even though the dataset fingerprints differ from the recorded ones")
    parser.add_argument("--allow-code-change", action="store_true",
                        help="re-train even though the git commit or uncommitted changes differ")
    parser.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance on metrics (default 1e-6)")
    parser.add_argument("--atol", type=float, default=0.0, help="absolute tolerance on metrics (default 0)")
    parser.add_argument("--config-override", action="append", default=[], metavar="KEY=VALUE",
                        help="change a config value for the re-run (reported as a config difference)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout (training "
                        "output goes to stderr); it is saved as reproduce.json in the new run dir either way")


def run(args: argparse.Namespace) -> int:
    from src.pipelines.reproduce import ReproduceRequest, exit_code, format_report, reproduce, to_json

    request = ReproduceRequest(run=args.run, epochs=args.epochs, allow_data_change=args.allow_data_change,
                               allow_code_change=args.allow_code_change, rtol=args.rtol, atol=args.atol,
                               overrides=args.config_override)
    if not args.json:
        report = reproduce(request)
        print(format_report(report))
        return exit_code(report)
    with stdout_to_stderr():
        report = reproduce(request)
    print(to_json(report), end="")
    return exit_code(report)


@contextlib.contextmanager
def stdout_to_stderr():
    """Keep stdout pure JSON: prints and ultralytics' logger (whose handler holds the real stdout) go to stderr."""
    import logging
    import sys

    moved = []
    for name in ("ultralytics",):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
                moved.append(handler)
                handler.setStream(sys.stderr)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for handler in moved:
            handler.setStream(sys.stdout)
