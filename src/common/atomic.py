"""Atomic file writes: a reader sees the old file or the new one, never half of either.

The target's folder must exist: a write never creates directories (a typo in a path must not leave new
folders behind). Callers that own a folder (run dirs, the registry folder, caches) create it themselves.
"""

import os
import tempfile
from pathlib import Path
from typing import Callable, Union

PathLike = Union[str, os.PathLike]


def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry itself reaches the disk.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _default_file_mode() -> int:
    # mkstemp creates 0600 files; give ours the mode a plain open() would (0666 minus the umask).
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_with(path: PathLike, write: Callable[[object], None], mode: str = "wb") -> None:
    """Call `write(fileobj)` on a temp file beside `path`, fsync it, then rename it over `path`.

    OS errors name `path` (not the temp file), so the message points at the file the caller asked for.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename in (None, tmp):
            raise _naming(exc, path) from exc
        raise
    _fsync_dir(path.parent)


def _naming(exc: OSError, path: Path) -> OSError:
    # OSError(errno, strerror, filename) builds the matching subclass (FileNotFoundError, IsADirectoryError...).
    if exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror, str(path))


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    atomic_write_with(path, lambda f: f.write(data), "wb")


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
