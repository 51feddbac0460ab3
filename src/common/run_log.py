"""Copy everything a run prints into `<run_dir>/train.log`, while still printing it."""

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator, Sequence


class _Tee:
    # A library may keep a reference to this object after the run (a logging handler created during it),
    # so once detached it must keep passing writes through instead of failing on a closed file.
    def __init__(self, stream, log_file):
        self._stream = stream
        self._log = log_file

    def detach(self):
        self._log = None

    def write(self, text):
        if self._log is not None:
            self._log.write(text)
        return self._stream.write(text)

    def flush(self):
        if self._log is not None:
            self._log.flush()
        self._stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding ... come from the real stream
        return getattr(self._stream, name)


@contextlib.contextmanager
def tee_output(log_path: Path, loggers: Sequence[str] = ("ultralytics",)) -> Iterator[None]:
    """Tee sys.stdout/sys.stderr, and `loggers` (whose handlers hold the original streams), into log_path."""
    log_file = open(log_path, "a", encoding="utf-8", buffering=1)
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter("%(message)s"))
    attached = []
    for name in loggers:
        logger = logging.getLogger(name)
        if any(isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr)
               for h in logger.handlers):
            logger.addHandler(handler)
            attached.append(logger)
    old_out, old_err = sys.stdout, sys.stderr
    tees = _Tee(old_out, log_file), _Tee(old_err, log_file)
    sys.stdout, sys.stderr = tees
    try:
        yield
    finally:
        sys.stdout, sys.stderr = old_out, old_err
        for tee in tees:
            tee.detach()
        for logger in attached:
            logger.removeHandler(handler)
        log_file.close()
