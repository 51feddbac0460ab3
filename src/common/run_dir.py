"""Run ids and run directories: `<output root>/<YYYYMMDD_HHMMSS>_<run name>/`, never reused."""

import os
import re
from datetime import datetime
from pathlib import Path
from typing import Optional, Tuple

from src.common.errors import UserError

OUTPUT_DIR_ENV = "STREET_SCENE_OUTPUT_DIR"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")  # used with fullmatch: `$` allows a final "\n"
_MAX_SUFFIX = 1000


def output_root(explicit: Optional[Path] = None) -> Path:
    """Where run dirs go: `explicit`, else STREET_SCENE_OUTPUT_DIR, else ./outputs (absolute)."""
    root = explicit or os.environ.get(OUTPUT_DIR_ENV) or "outputs"
    return Path(root).expanduser().resolve()


def validate_run_name(name: str) -> str:
    """Run names become folder names: letters, digits, '.', '_', '+', '-'; no separators, no '..'."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise UserError(
            f"invalid run name {name!r}: use 1-100 letters, digits, '.', '_', '+' or '-' "
            "(no path separators, spaces or '..'), starting with a letter or digit"
        )
    return name


def make_run_id(run_name: str, now: Optional[datetime] = None) -> str:
    stamp = (now or datetime.now()).strftime("%Y%m%d_%H%M%S")
    return f"{stamp}_{validate_run_name(run_name)}"


def create_run_dir(run_name: str, root: Optional[Path] = None, now: Optional[datetime] = None) -> Tuple[str, Path]:
    """Create a fresh run dir atomically and return (run_id, path).

    `mkdir` without exist_ok is the lock: if another run took the same second and name, this one becomes
    `<id>-2`, `<id>-3`, ... An existing folder is never reused.
    """
    base_id = make_run_id(run_name, now)
    root = output_root(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {root}: {exc.strerror}; set {OUTPUT_DIR_ENV}") from None
    for n in range(1, _MAX_SUFFIX + 1):
        run_id = base_id if n == 1 else f"{base_id}-{n}"
        path = root / run_id
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"cannot create run directory {path}: {exc.strerror}") from None
        return run_id, path
    raise UserError(f"more than {_MAX_SUFFIX} runs named {run_name!r} started this second in {root}")


def resolve_run(ref: str, root: Optional[Path] = None) -> Path:
    """A run dir path or a run id under the output root -> the run dir (must hold config + metadata)."""
    candidates = [Path(ref).expanduser(), output_root(root) / ref]
    for path in candidates:
        if path.is_dir():
            missing = [f for f in ("config.yaml", "metadata.yaml") if not (path / f).is_file()]
            if missing:
                raise UserError(f"{path} is not a street-scene run directory: missing {', '.join(missing)}")
            return path.resolve()
    raise UserError(f"unknown run {ref!r}: no such run directory, and no run id under {output_root(root)}")
