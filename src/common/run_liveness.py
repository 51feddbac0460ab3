"""Whether a run is alive: a lock its process holds while it trains, and signals that end it as `failed`.

The lock is an flock on `<run dir>/.lock` (filelock): the kernel releases it when the process dies, however it
dies (SIGKILL, OOM killer, power loss of the client). So a run whose metadata says `running` while its lock is
free is stale: its process is gone. flock is reliable on local filesystems; on NFS it depends on the mount.
"""

import contextlib
import signal
import threading
from pathlib import Path
from typing import Iterator, Optional

from src.common.errors import RunInterrupted, UserError
from src.common.run_dir import LOCK_FILE

_SIGNALS = ("SIGTERM", "SIGHUP")


class RunLock:
    """The run's lock, taken without waiting: a second process gets a UserError, not a hang."""

    def __init__(self, run_dir: Path):
        from filelock import FileLock

        self.run_dir = Path(run_dir)
        # preserve_lock_file: deleting a lock file another process may be opening is a classic flock race
        self._lock = FileLock(str(self.run_dir / LOCK_FILE), preserve_lock_file=True)

    def acquire(self, why: str) -> "RunLock":
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise UserError(f"run {self.run_dir.name} is in use by another live process (its lock "
                            f"{self.run_dir / LOCK_FILE} is held), so it cannot be {why}; wait for it to finish or "
                            "stop it, then retry") from None
        return self

    def release(self) -> None:
        self._lock.release()


def lock_is_free(run_dir: Path) -> bool:
    """True when no live process holds the run's lock (or the run never had one)."""
    from filelock import Timeout

    if not (Path(run_dir) / LOCK_FILE).exists():
        return True
    lock = RunLock(run_dir)
    try:
        lock._lock.acquire(timeout=0)
    except Timeout:
        return False
    lock.release()
    return True


@contextlib.contextmanager
def held(run_dir: Path, why: str) -> Iterator[Optional[RunLock]]:
    lock = RunLock(run_dir).acquire(why)
    try:
        yield lock
    finally:
        lock.release()


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """SIGTERM/SIGHUP raise RunInterrupted in the main thread for the duration; the previous handlers come back.

    Outside the main thread (signal handlers can only be set there) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise RunInterrupted(signum)

    previous = {}
    for name in _SIGNALS:
        sig = getattr(signal, name)
        previous[sig] = signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def remove_temp_files(run_dir: Path) -> list:
    """Delete the `.<name>.<random>.tmp` files atomic writes of a killed process left in a run dir. Only call it
    while holding the run's lock: then no live writer can own them. Returns the names removed."""
    removed = []
    for tmp in Path(run_dir).glob(".*.tmp"):
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink()
            removed.append(tmp.name)
    return removed
