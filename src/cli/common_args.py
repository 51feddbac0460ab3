"""Arguments shared by train, evaluate and check-determinism (the documented names).

The `--task` choices and the `--<family>-task` options come from src.tasks.TASKS (a dict of module names, so
this stays instant); subtask names come from the config, so they are checked after it is loaded.
"""

import argparse

from src.common.errors import UserError
from src.tasks import TASKS


def add_config_and_task(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config file (e.g. configs/detection_config.yaml "
                        "or outputs/<run_id>/config.yaml)")
    parser.add_argument("--task", required=True, choices=tuple(TASKS), help="task family")
    parser.add_argument("--subtask", help="which of the config's `<task>.tasks` to run (e.g. vehicle_detection); "
                        "optional when the config defines only one")
    for family in TASKS:
        parser.add_argument(f"--{family}-task", dest=_dest(family), metavar="SUBTASK",
                            help=f"same as --subtask, for --task {family} (a key of {family}.tasks in the config)")
    parser.add_argument("--data-yaml", help="dataset YAML with class names (configs/datasets/<task>.yaml)")
    parser.add_argument("--config-override", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. detection.training.learning_rate=0.001 "
                        "(repeatable; values are JSON/YAML: 64, 1e-3, true, null, [512,512]; "
                        "+key=value adds a subtask or an extra library argument)")


def _dest(family: str) -> str:
    return f"{family}_task"


def subtask_of(args: argparse.Namespace):
    """--subtask or --<task>-task (they must agree); --<other family>-task is a mistake, not ignored."""
    for family in TASKS:
        if family != args.task and getattr(args, _dest(family), None) is not None:
            raise UserError(f"--{family}-task does not apply to --task {args.task}; use --{args.task}-task or "
                            "--subtask")
    family_value = getattr(args, _dest(args.task), None)
    if args.subtask is not None and family_value is not None and args.subtask != family_value:
        raise UserError(f"--subtask {args.subtask} and --{args.task}-task {family_value} disagree; give one")
    return args.subtask if args.subtask is not None else family_value
