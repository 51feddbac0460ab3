"""What library code tells the person running it (progress lines, notes, warnings) goes through one logger,
`street_scene`; whoever runs the library decides where it appears. The CLI and StreetScenePipeline show it with
`shown()`: notes on stdout (or stderr, when stdout carries JSON), warnings on stderr. Used as a plain library,
warnings still reach stderr (Python's last-resort handler) and notes stay quiet unless the caller configures
logging.

Messages are written whole, as given: a warning says "warning: ..." itself, so it reads the same in train.log.
"""

import contextlib
import functools
import logging
import sys
from typing import Callable, Iterator

LOGGER_NAME = "street_scene"


def note(message: str) -> None:
    """Progress or a result line ("Run ID: ...")."""
    logging.getLogger(LOGGER_NAME).info(message)


def warn(message: str) -> None:
    """Something the user should know that does not stop the command."""
    logging.getLogger(LOGGER_NAME).warning(message)


class _CurrentStream(logging.Handler):
    """Writes to sys.stdout / sys.stderr as they are at the time of each message, so redirections made later
    (a run's train.log tee, --json keeping stdout clean, pytest's capture) apply to our lines too."""

    def __init__(self, stream_name: str, below_warning: bool):
        super().__init__(logging.DEBUG)
        self.stream_name, self.below_warning = stream_name, below_warning

    def emit(self, record: logging.LogRecord) -> None:
        if (record.levelno < logging.WARNING) != self.below_warning:
            return
        stream = getattr(sys, self.stream_name)
        try:
            stream.write(record.getMessage() + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001  (a closed stream must not break the command; logging's own rule)
            self.handleError(record)


@contextlib.contextmanager
def shown(notes_to: str = "stdout") -> Iterator[None]:
    """Show the library's notes on `notes_to` ("stdout" or "stderr") and its warnings on stderr for the block.
    Nested use keeps the outer setting: the first entry point to run decides."""
    logger = logging.getLogger(LOGGER_NAME)
    if any(isinstance(h, _CurrentStream) for h in logger.handlers):
        yield
        return
    handlers = [_CurrentStream(notes_to, below_warning=True), _CurrentStream("stderr", below_warning=False)]
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False  # not twice, through an application's root handler too
    for handler in handlers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def with_notes_shown(fn: Callable) -> Callable:
    """Decorator for Python entry points (StreetScenePipeline): what the CLI would print, they print too."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with shown():
            return fn(*args, **kwargs)

    return wrapper
