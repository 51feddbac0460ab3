"""Run ids and run directories: `<output root>/<YYYYMMDD_HHMMSS>_<run name>/`, never reused.

This module owns the run directory's layout: the file names below are spelled nowhere else, and `RunDir` reads
and writes the files every task's run has (config, metadata, per-epoch metrics, environment, git diff).
"""

import csv
import io
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from src.common.errors import UserError

# What a run directory holds (see docs/ARCHITECTURE.md "Run directory").
CONFIG_FILE = "config.yaml"  # the resolved config; its hash is the run's config hash
OVERRIDES_FILE = "overrides.yaml"  # the --config-override arguments as given
METADATA_FILE = "metadata.yaml"  # status, provenance, result
METRICS_FILE = "metrics.csv"  # one row per epoch
ENVIRONMENT_FILE = "environment.txt"  # `pip freeze`-style package list
GIT_DIFF_FILE = "git.diff"  # uncommitted changes of the code that ran
LOG_FILE = "train.log"
CURVES_FILE = "training_curves.png"
BEST_CHECKPOINT = "best_model.pth"
LOCK_FILE = ".lock"  # held (flock) by the process that owns the run
DATA_YAML_FILE = "data.yaml"  # detection: the effective ultralytics data yaml
ULTRALYTICS_DIR = "ultralytics"  # detection: ultralytics' own files (args.yaml, results.csv, plots)
EXPORTS_FILE = "exports.json"  # `street-scene export` records, one per exported file
EVALUATIONS_DIR = "evaluations"  # beside a checkpoint: evaluation results (and cached leaderboard results)

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
            missing = [f for f in (CONFIG_FILE, METADATA_FILE) if not (path / f).is_file()]
            if missing:
                raise UserError(f"{path} is not a street-scene run directory: missing {', '.join(missing)}")
            return path.resolve()
    raise UserError(f"unknown run {ref!r}: no such run directory, and no run id under {output_root(root)}")


def epoch_checkpoint_name(epoch: int) -> str:
    return f"checkpoint_epoch_{epoch}.pth"


def epoch_of_checkpoint(path: Path) -> int:
    """The epoch in `checkpoint_epoch_<n>.pth`; -1 for any other name."""
    try:
        return int(Path(path).stem.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        return -1


@dataclass(frozen=True)
class RunDir:
    """One run directory, and how the files several modules read (config, metrics, text files) are read."""

    path: Path

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    def read_config(self) -> Dict[str, Any]:
        from src.common.yaml_io import load_yaml

        path = self.path / CONFIG_FILE
        config = load_yaml(path)
        if not isinstance(config, dict):
            raise UserError(f"{path} is not a mapping; the run directory is damaged")
        return config

    def read_metrics(self) -> List[Dict[str, Any]]:
        return read_metrics_csv(self.metrics)

    def read_text(self, name: str) -> Optional[str]:
        """A text file of the run (git.diff, environment.txt, ...); None when absent. Undecodable bytes survive
        (surrogateescape), so comparing two texts compares the files."""
        path = self.path / name
        return path.read_text(encoding="utf-8", errors="surrogateescape") if path.is_file() else None

    def read_packages(self) -> Optional[Dict[str, str]]:
        """{package: version} from environment.txt; None when the run has none."""
        text = self.read_text(ENVIRONMENT_FILE)
        return None if text is None else parse_packages(text)


def parse_packages(text: str) -> Dict[str, str]:
    """`name==version` lines -> {name: version} (other lines, e.g. editable installs, are skipped)."""
    return dict(line.split("==", 1) for line in text.splitlines() if "==" in line)


def write_metrics_csv(path: Path, rows: List[Dict[str, Any]]) -> None:
    """Rows as CSV (columns in first-seen order), atomically."""
    from src.common.atomic import atomic_write_text

    columns: List[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_metrics_csv(path: Path) -> List[Dict[str, Any]]:
    """Rows of a metrics.csv with numbers parsed (int, else float) and empty cells as None; [] when absent."""
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [{k: _parse_cell(v) for k, v in row.items() if k is not None} for row in rows]


def _parse_cell(text: Optional[str]) -> Any:
    if text is None or text == "":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text
