"""The `street-scene` command. Subcommand modules are light: `street-scene --help` never imports torch."""

import argparse
import importlib
import sys
from typing import List, Optional

# name -> module providing HELP, add_arguments(parser), run(args) -> int
COMMANDS = {
    "train": "src.cli.train",
    "evaluate": "src.cli.evaluate",
    "make-dataset": "src.cli.dataset_cmd",
    "registry": "src.cli.registry_cmd",
    "data": "src.cli.data_cmd",
    "diff": "src.cli.diff_cmd",
    "sync": "src.cli.sync_cmd",
    "reproduce": "src.cli.reproduce_cmd",
    "check-determinism": "src.cli.determinism_cmd",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="street-scene",
        description="Reproducible training and evaluation of street-scene detection and segmentation models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def run_command(run, args) -> int:
    """Run a command function; bad input becomes one line on stderr and exit code 2."""
    from src.common.errors import UserError

    try:
        return int(run(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args._run, args)


def script_main(command: str, prog: str, argv: Optional[List[str]] = None) -> int:
    """Entry for scripts/<command>.py: one command's parser only, same behaviour as `street-scene <command>`."""
    module = importlib.import_module(COMMANDS[command])
    parser = argparse.ArgumentParser(prog=prog, description=module.HELP)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    return run_command(module.run, args)


if __name__ == "__main__":
    sys.exit(main())
