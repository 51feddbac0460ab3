"""The `street-scene` command. Subcommand modules are light: `street-scene --help` never imports torch."""

import argparse
import importlib
import sys
from typing import List, Optional

from src.common.error_lines import run_command

# name -> module providing HELP, add_arguments(parser), run(args) -> int
COMMANDS = {
    "train": "src.cli.train",
    "evaluate": "src.cli.evaluate",
    "make-dataset": "src.cli.dataset_cmd",
    "convert": "src.cli.convert_cmd",
    "registry": "src.cli.registry_cmd",
    "data": "src.cli.data_cmd",
    "diff": "src.cli.diff_cmd",
    "sync": "src.cli.sync_cmd",
    "reproduce": "src.cli.reproduce_cmd",
    "check-determinism": "src.cli.determinism_cmd",
    "runs": "src.cli.runs_cmd",
    "predict": "src.cli.predict_cmd",
    "export": "src.cli.export_cmd",
    "leaderboard": "src.cli.leaderboard_cmd",
    "report": "src.cli.report_cmd",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, except that a usage error is one `error:` line (what, and where to read more), like every other
    error of ours; `--help` still prints the full usage."""

    def error(self, message: str):
        self.exit(2, f"error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The whole command line, or (`only`) the top level with that one command: importing and building all
    fifteen commands costs ~50 ms, a third of a `registry list` on a big registry."""
    parser = OneLineParser(
        prog="street-scene",
        description="Reproducible training and evaluation of street-scene detection and segmentation models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            continue
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The first word names the command whenever it is one (the top level has no other positional or option
    # before it); anything else (--help, a typo) gets the full parser, which lists every command.
    args = build_parser(argv[0] if argv and argv[0] in COMMANDS else None).parse_args(argv)
    return run_command(args._run, args)


def script_main(command: str, prog: str, argv: Optional[List[str]] = None) -> int:
    """Entry for scripts/<command>.py: one command's parser only, same behaviour as `street-scene <command>`."""
    module = importlib.import_module(COMMANDS[command])
    parser = OneLineParser(prog=prog, description=module.HELP)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    return run_command(module.run, args)


if __name__ == "__main__":
    sys.exit(main())
