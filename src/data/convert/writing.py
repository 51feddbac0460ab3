"""Building a converted dataset: a new or empty target, a hidden build folder renamed into place at the end,
images hard-linked (else copied) under their new names.

The build folder is named like `make-dataset`'s (`.<name>.partial-<pid>@<host>-<random>`), so a conversion killed
with SIGKILL is removed by the next build (of either command) into the same parent folder once its process is gone.
"""

import errno
import os
import secrets
import shutil
from pathlib import Path

from src.common.atomic import atomic_write_with
from src.common.errors import UserError
from src.common.report import warn

# Link failures that mean "this file system or this file can't be linked here": fall back to a copy.
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES}


def check_target(out_dir) -> Path:
    """The absolute target folder; refuse one that exists and is not an empty folder (nothing is overwritten)."""
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder; choose a new folder for the converted dataset")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out {out} is not empty; refusing to overwrite it, choose a new or empty folder")
    return out


def build_into(out: Path, build) -> dict:
    """Run `build(tmp)` in a hidden folder beside `out` and rename it to `out`; on any failure remove the
    hidden folder and the parent folders this call created, so nothing is left behind."""
    from src.data.synthetic import _host, remove_stale_partials

    check_target(out)
    created = _make_parents(out.parent)
    try:
        for stale, pid in remove_stale_partials(out.parent):
            warn(f"note: removed {stale}, a partial dataset left by process {pid}, which is no longer running")
        tmp = out.parent / f".{out.name}.partial-{os.getpid()}@{_host()}-{secrets.token_hex(4)}"
        tmp.mkdir()  # plain mkdir (not mkdtemp) so the dataset gets the user's usual permissions
    except BaseException:
        _remove_empty(created)
        raise
    try:
        summary = build(tmp)
        try:
            os.rename(tmp, out)  # replaces `out` only if it is an empty folder
        except OSError as exc:
            raise UserError(f"cannot move the converted dataset to {out}: {exc.strerror}; choose a new folder") \
                from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise
    return summary


def _make_parents(parent: Path) -> list[Path]:
    missing = []
    for folder in (parent, *parent.parents):
        if folder.exists():
            break
        missing.append(folder)
    parent.mkdir(parents=True, exist_ok=True)
    return missing  # deepest first


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def split_dirs(root: Path, split: str | None, kinds: tuple[str, ...]) -> dict[str, Path]:
    """{kind: folder} for one split (`root/<split>/<kind>`, or `root/<kind>` without a split), created."""
    base = root / split if split else root
    folders = {kind: base / kind for kind in kinds}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return folders


def place_image(source: Path, target: Path, copy: bool) -> bool:
    """Hard-link `source` as `target` (True), or copy it (False) when `copy` or when linking is refused."""
    if not copy:
        try:
            os.link(source, target)
            return True
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
    with open(source, "rb") as src:
        atomic_write_with(target, lambda dst: shutil.copyfileobj(src, dst, 1 << 20))
    return False
