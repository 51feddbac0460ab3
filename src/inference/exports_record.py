"""`<run dir>/exports.json`: every export of a run's checkpoint, a JSON list of
{format, path, sha256, created_at, imgsz, dynamic, parity: {max_abs_diff, max_rel_diff, torch_p50_ms,
runtime_p50_ms, images}} (parity null where no comparison applies). Written atomically; under the run's lock."""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from src.common.atomic import atomic_write_text
from src.common.errors import UserError
from src.common.run_dir import CONFIG_FILE, EXPORTS_FILE, METADATA_FILE


def run_dir_of(checkpoint: Path) -> Optional[Path]:
    """The run directory a checkpoint sits in, None for a checkpoint outside one."""
    folder = Path(checkpoint).resolve().parent
    return folder if (folder / METADATA_FILE).is_file() and (folder / CONFIG_FILE).is_file() else None


def read_exports(run_dir: Path) -> List[Dict[str, Any]]:
    path = Path(run_dir) / EXPORTS_FILE
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not readable JSON ({exc}); move it aside and export again") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UserError(f"{path} is not a JSON list of export records; move it aside and export again")
    return entries


def record_export(run_dir: Path, entry: Dict[str, Any]) -> None:
    """Append `entry`, replacing an earlier record of the same path (that file was just overwritten)."""
    entries = [e for e in read_exports(run_dir) if e.get("path") != entry["path"]]
    entries.append(entry)
    atomic_write_text(Path(run_dir) / EXPORTS_FILE, json.dumps(entries, indent=2) + "\n")
