"""How an error reaches the user: one `error:` line on stderr and an exit code, never a traceback (unless
STREET_SCENE_DEBUG=1). Shared by the CLI and by the processes our pipelines start (check-determinism's trainings)."""

import os
import sys

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
    """Run a command function; bad input and refused file operations become one line on stderr and exit 2.
    The library's notes are shown on stdout, or on stderr when the command prints JSON there (`--json`)."""
    from src.common.errors import RunInterrupted, UserError
    from src.common.report import shown

    debug = os.environ.get(DEBUG_ENV) == "1"
    try:
        with shown("stderr" if getattr(args, "json", False) else "stdout"):
            return int(run(args) or 0)
    except UserError as exc:
        return _fail(f"error: {exc}", exc.exit_code, debug)
    except BrokenPipeError as exc:
        if exc.filename is not None:  # a named pipe we opened, not our output
            return _fail(os_error_line(exc), 2, debug)
        # Whoever read our output stopped early (`| head`): like any Unix tool, stop quietly. Point stdout at
        # /dev/null so that the interpreter's final flush does not print a second error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # what a shell reports for a process killed by SIGPIPE
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
