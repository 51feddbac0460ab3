"""The one error type users see.

A `UserError` is bad input: the CLI prints its message as one line and exits 2, with no traceback.
Messages say what is wrong, where, and how to fix it.
"""


class UserError(Exception):
    """Bad input from the user (config, data, arguments, files). Exit code 2."""

    exit_code = 2


class RegistryCorruptError(UserError):
    """The registry file exists but cannot be trusted; it is never overwritten."""


class RunFailedError(UserError):
    """A run that started and then failed for a reason one line states (a NaN loss, a setting the library did
    not apply, a signal). Its run directory is marked `failed`; exit code 1 (2 means refused before starting)."""

    exit_code = 1


class RunInterrupted(BaseException):
    """SIGTERM / SIGHUP (what `timeout`, Slurm and Kubernetes send) during a run, raised in the main thread so the
    run is marked `failed` and its checkpoints flushed on the way out. A BaseException, like KeyboardInterrupt,
    so that library code catching Exception cannot swallow it."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        self.exit_code = 128 + signum  # the shell's convention for "killed by signal N"
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
