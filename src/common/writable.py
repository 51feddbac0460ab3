"""Refuse, before a run starts, the places it will have to write to at its end (registry, output root).

Trying is the only honest test (as root `os.access` says yes to everything but a read-only mount), so a probe
file is created and removed in the folder that will receive the writes, or in its nearest existing ancestor
when that folder does not exist yet; nothing else is created.
"""

import os
import tempfile
from pathlib import Path

from src.common.errors import UserError


def check_writable(path: Path, what: str, fix: str, *, is_dir: bool = False) -> None:
    """One-line UserError unless `path` (a file, or a folder with `is_dir`) can be created or replaced later."""
    path = Path(path).expanduser().absolute()
    if not is_dir and path.is_dir():
        raise UserError(f"{what} {path} is a directory, not a file; {fix}")
    folder = path if is_dir else path.parent
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot create {what} {path}: {existing} is a file, not a directory; {fix}")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".street-scene-probe-"):
            pass
    except OSError as exc:
        raise UserError(f"cannot write {what} {path}: {exc.strerror or exc} in {existing}; {fix}") from None
    if not is_dir and path.is_file() and not os.access(path, os.W_OK):
        raise UserError(f"{what} {path} is not writable; {fix}")
