"""`evaluate`: evaluate a checkpoint on test data, optionally verifying its config (scripts/evaluate.py)."""

import argparse

from src.cli.common_args import add_config_and_task, subtask_of

HELP = "evaluate a street-scene checkpoint on a test split"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_and_task(parser)
    parser.add_argument("--test-data", required=True, help="test split (same forms as --train-data)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, e.g. outputs/<run>/best_model.pth")
    parser.add_argument("--verify-config", action="store_true",
                        help="compare the checkpoint's config hash with this config's and list differences")
    parser.add_argument("--strict", action="store_true",
                        help="with --verify-config: exit non-zero on a mismatch instead of evaluating")
    parser.add_argument("--seed", type=int, help="the seed the model was trained with, if it was given as --seed "
                        "(part of the config hash that --verify-config compares)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    parser.add_argument("--allow-legacy-checkpoint", action="store_true",
                        help="load a checkpoint without street-scene metadata (unpickles code; no verification)")


def run(args: argparse.Namespace) -> int:
    import contextlib
    import json
    import sys
    from pathlib import Path

    from src.pipelines.evaluation import EvalRequest, evaluate

    if args.strict and not args.verify_config:
        args.verify_config = True  # --strict only means something with verification
    request = EvalRequest(
        config_path=Path(args.config), task=args.task, subtask=subtask_of(args), test_data=args.test_data,
        checkpoint_path=Path(args.checkpoint), data_yaml=args.data_yaml, overrides=args.config_override, seed=args.seed,
        verify_config=args.verify_config, strict=args.strict, allow_legacy=args.allow_legacy_checkpoint,
    )
    if not args.json:
        metrics = evaluate(request)
        print(format_metrics(metrics))
        return 0
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout pure JSON for scripts
        metrics = evaluate(request)
    print(json.dumps(metrics, indent=2))  # key order is meaningful: classes in class-id order
    return 0


def format_metrics(result: dict) -> str:
    """The evaluation result as text: the metrics, then one line per class."""
    lines = [f"Evaluation results ({result['subtask']}, {result['split']} split, run {result.get('run_id')}):"]
    lines += [f"  {key}: {_num(value)}" for key, value in result["metrics"].items()]
    if result.get("per_class"):
        lines.append("  per class:")
        lines += [f"    {name}: " + " ".join(f"{k}={_num(v)}" for k, v in values.items())
                  for name, values in result["per_class"].items()]
    return "\n".join(lines)


def _num(value) -> str:
    if value is None:
        return "n/a"  # e.g. a class with no ground truth in this split
    return f"{value:.4f}" if isinstance(value, float) else str(value)
