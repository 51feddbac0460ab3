"""File writes on one background thread, so a training loop does not wait for serialization and fsync.

Jobs run one at a time, in the order submitted. At most one job is queued or running: `submit` first waits for
the previous job, which bounds memory to one extra copy of whatever a job holds (for checkpoints: the weights)
and means a failed write is reported no later than the next submit. `wait()` must be called before anything
relies on the files (e.g. hashing a checkpoint for the registry); it re-raises the job's exception.
"""

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional

from src.common.report import warn


class BackgroundWriter:
    """Owned by one thread (the training loop's): only the jobs run elsewhere, so no locking is needed."""

    def __init__(self, name: str = "street-scene-writer"):
        self._name = name
        self._executor: Optional[ThreadPoolExecutor] = None
        self._pending: Optional[Future] = None

    def submit(self, job: Callable[[], None]) -> None:
        """Run `job()` in the background after the previous job finished (raising that one's error, if any)."""
        self.wait()
        if self._executor is None:  # created lazily: no thread for runs that never save
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        self._pending = self._executor.submit(job)

    def wait(self) -> None:
        """Block until the submitted job is done; re-raise its exception."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self, raise_errors: bool = True) -> None:
        """Wait for the last job and stop the thread. With raise_errors=False (the caller is already failing)
        a write error is only printed as a warning, so the original error stays the one reported; the file
        is then simply absent (writes are atomic: never half-written)."""
        try:
            self.wait()
        except Exception as exc:  # noqa: BLE001 - re-raised unless secondary to a failure being handled
            if raise_errors:
                raise
            warn(f"warning: a background write failed as well: {type(exc).__name__}: {exc}")
        finally:
            executor, self._executor = self._executor, None
            if executor is not None:  # also joins a job still running when wait() was interrupted
                executor.shutdown(wait=True)
