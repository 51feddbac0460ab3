"""The `street-scene` command. Subcommand modules are light: `street-scene --help` never imports torch."""

import argparse
import importlib
import os
import sys
from typing import List, Optional

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


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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


DEBUG_ENV = "STREET_SCENE_DEBUG"  # =1: print the full traceback behind an `error:` line
# What to try when the operating system refuses a file operation, by errno name.
_OS_HINTS = {
    "ENOSPC": "the disk is full; free some space and retry",
    "EDQUOT": "the disk quota is exhausted; free some space and retry",
    "EROFS": "the file system is read-only; choose a writable location",
    "EACCES": "check the permissions of the file and its folder",
    "EPERM": "check the permissions of the file and its folder",
    "EISDIR": "a folder is where a file was expected; check the path",
    "ENOTDIR": "a part of the path is a file, not a folder; check the path",
    "ENOENT": "check that the path exists",
    "EEXIST": "something already exists at that path (a file where a folder should be?); check the path",
    "ENAMETOOLONG": "use a shorter path",
    "EMFILE": "too many open files; raise the limit (ulimit -n) and retry",
}


def run_command(run, args) -> int:
    """Run a command function; bad input and refused file operations become one line on stderr and exit 2."""
    from src.common.errors import RunInterrupted, UserError

    debug = os.environ.get(DEBUG_ENV) == "1"
    try:
        return int(run(args) or 0)
    except UserError as exc:
        return _fail(f"error: {exc}", exc.exit_code, debug)
    except OSError as exc:  # disk full, read-only, a file where a folder should be: the user can fix these
        return _fail(os_error_line(exc), 2, debug)
    except RunInterrupted as exc:  # SIGTERM/SIGHUP: a run in progress was marked failed on the way out
        return _fail(f"error: {exc}", exc.exit_code, debug)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _fail(line: str, code: int, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exc()
    print(line, file=sys.stderr)
    return code


def os_error_line(exc: OSError) -> str:
    """`error: cannot access <file>: <reason>; <hint>` on one line."""
    import errno

    where = ""
    if exc.filename is not None:
        where = f"cannot access {_name(exc.filename)}"
        if exc.filename2 is not None:
            where += f" -> {_name(exc.filename2)}"
        where += ": "
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = _OS_HINTS.get(errno.errorcode.get(exc.errno, ""), f"set {DEBUG_ENV}=1 for the full traceback")
    return " ".join(f"error: {where}{reason}; {hint}".split())  # a file name with a newline stays one line


def _name(filename) -> str:
    return os.fsdecode(filename) if isinstance(filename, (str, bytes, os.PathLike)) else str(filename)  # or an fd


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
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
