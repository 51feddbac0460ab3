"""ModelRegistry: the documented registry API over a crash-safe, concurrent JSON file.

The registry is a derived index: every entry can be rebuilt from its run directory (`build_entry`), so a
lost or corrupt file is recovered with `rebuild()` / `street-scene registry rebuild`.

    registry = ModelRegistry("registry/model_registry.json")
    best = registry.find_best_entry_by_metric(task="vehicle_detection", metric_name="best_val_metric", mode="max")
"""

import csv
import io
import json
import math
import os
import re
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, List, Optional, Union

from src.common.errors import RegistryCorruptError, UserError
from src.common.registry_format import MAX_DEPTH, OPTIONAL_STRING_FIELDS, value_problem
from src.common.registry_store import RegistryStore, copy_json

if TYPE_CHECKING:
    from src.common.registry_rundirs import RebuildReport, VerifyResult

REGISTRY_ENV = "STREET_SCENE_REGISTRY"
DEFAULT_REGISTRY = Path("registry") / "model_registry.json"
# A task is the subtask name a run was trained for (its config's `<task>.tasks` key). The registry does not keep
# a list of them: a new subtask in a config must be registrable without touching this file.
_TASK_NAME = re.compile(r"[A-Za-z0-9_.-]+")
MODES = ("max", "min")
REQUIRED_METADATA = ("pytorch_version", "ultralytics_version", "git_commit")
# Column order of entries and CSV exports: the documented fields first, then what users need to trust them.
ENTRY_FIELDS = ("run_id", "task", "config_hash", "checkpoint_path", "metrics", "timestamp", "metadata",
                "run_dir", "checkpoint_sha256", "config_path", "dataset", "status")
_PATH_FIELDS = ("checkpoint_path", "run_dir", "config_path")

__all__ = ["ModelRegistry", "build_entry", "default_registry_path", "RebuildReport", "VerifyResult"]


def build_entry(run_dir) -> dict:
    """The registry entry of a completed run directory (see registry_rundirs.build_entry)."""
    from src.common.registry_rundirs import build_entry as build  # run-dir code: not needed to read the registry

    return build(run_dir)


def __getattr__(name: str):
    if name in ("RebuildReport", "VerifyResult"):  # importable from here, loaded only when asked for
        from src.common import registry_rundirs

        return getattr(registry_rundirs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_registry_path() -> Path:
    """STREET_SCENE_REGISTRY, else ./registry/model_registry.json, made absolute now."""
    return Path(os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY).expanduser().absolute()


class ModelRegistry:
    """Trained models, one entry per run_id, in a JSON array file shared safely by many processes.

    A missing file is an empty registry; it is created (with its folder) on the first write.
    """

    def __init__(self, path: Union[str, os.PathLike, None] = None, *, lock_timeout: float = 60.0):
        self.path = Path(path).expanduser().absolute() if path is not None else default_registry_path()
        self._store = RegistryStore(self.path, lock_timeout)

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.path)!r})"

    def __len__(self) -> int:
        return self._store.count()

    # ---- writing -------------------------------------------------------------------------------------------
    def register(self, entry: dict) -> dict:
        """Add `entry` (what training calls), or replace the entry with the same run_id. Returns what was stored."""
        stored = normalize_entry(entry)
        self._store.upsert([stored])
        return copy_json(stored)

    add_entry = register

    def register_many(self, entries: Iterable[dict]) -> int:
        """Register several entries in one locked write; returns how many."""
        stored = [normalize_entry(e) for e in entries]
        if stored:
            self._store.upsert(stored)
        return len(stored)

    def remove_entry(self, run_id: str) -> bool:
        """Remove the entry for `run_id`; False if there was none."""
        return self._store.remove(_check_run_id(run_id))

    # ---- reading -------------------------------------------------------------------------------------------
    def list_entries(self) -> List[dict]:
        """Every entry, in registration order (copies: changing them does not change the registry)."""
        return self._store.entries()

    def list_summaries(self, task: Optional[str] = None, *, metrics: bool = True) -> List[dict]:
        """run_id, task, status, timestamp, config_hash, metrics_line (the metrics as one short line) and, unless
        `metrics` is False, metrics of every entry (of `task`), in order: what a table of runs shows, answered
        from the index without reading whole entries."""
        return self._store.summaries(None if task is None else _check_task(task), metrics)

    def get_entry(self, run_id: str) -> Optional[dict]:
        return self._store.get(_check_run_id(run_id))

    def find_entries_by_task(self, task: str) -> List[dict]:
        return self._store.where("task", _check_task(task))

    def find_entries_by_config_hash(self, config_hash: str) -> List[dict]:
        if not isinstance(config_hash, str):
            raise ValueError(f"config_hash must be a string, got {type(config_hash).__name__}")
        return self._store.where("config_hash", config_hash)

    def find_best_entry_by_metric(self, task: str, metric_name: str, mode: str = "max") -> Optional[dict]:
        """The entry of `task` with the highest (`max`) or lowest (`min`) finite `metric_name`, or None.

        Entries without the metric, or with a non-numeric value, are skipped. Ties go to the earliest
        timestamp, then the smallest run_id, so the answer depends only on the entries, not their order.
        """
        _check_task(task)
        if not isinstance(metric_name, str) or not metric_name:
            raise ValueError(f"metric_name must be a non-empty string, got {metric_name!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        return self._store.best(task, metric_name, mode)

    def export_to_csv(self, path: Union[str, os.PathLike]) -> int:
        """Write one row per entry, metrics/metadata/dataset flattened into `metrics.<name>`... columns.

        The CSV's folder must exist: a mistyped path is refused instead of creating folders.
        """
        from src.common.atomic import atomic_write_text  # tempfile: only writers need it

        path = _check_export_path(Path(path))
        rows = [_flatten(e) for e in self._store.entries()]
        columns = [c for c in ENTRY_FIELDS if c not in ("metrics", "metadata", "dataset")]
        group = {"metrics": 0, "metadata": 1, "dataset": 2}
        extra = sorted({k for row in rows for k in row} - set(columns),
                       key=lambda k: (group.get(k.split(".", 1)[0], 3), k))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns + extra, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, buf.getvalue())
        return len(rows)

    # ---- derived-index maintenance --------------------------------------------------------------------------
    def rebuild(self, outputs_dir: Union[str, os.PathLike, None] = None) -> "RebuildReport":
        """Replace the registry with entries built from every completed run dir under `outputs_dir`.

        Default root: STREET_SCENE_OUTPUT_DIR, else ./outputs. A corrupt registry file is moved aside to
        `<file>.corrupt-<time>` first; a valid one becomes `<file>.bak` like any other write. Run dirs are
        scanned before the lock is taken (scanning can be slow), so a run that finishes during the scan may need
        another rebuild.
        """
        from src.common.registry_rundirs import collect_entries

        report = collect_entries(outputs_dir, normalize_entry)
        report.entries.sort(key=lambda e: (e["timestamp"], e["run_id"]))
        try:
            before = {e["run_id"] for e in self._store.entries()}
        except RegistryCorruptError:  # the store moves it aside below
            before = set()
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
        report.moved_aside = self._store.replace_all(report.entries, stamp)
        report.dropped = sorted(before - {e["run_id"] for e in report.entries})
        return report

    def verify(self) -> List["VerifyResult"]:
        """Check every entry: checkpoint exists, sha256 matches, config hash matches the run's config.yaml."""
        from src.common.registry_rundirs import verify_entry

        return [verify_entry(e) for e in self._store.entries()]


def normalize_entry(entry: dict) -> dict:
    """Validate a caller's entry and return the JSON-safe dict that gets stored; bad input is a ValueError."""
    if not isinstance(entry, dict):
        raise ValueError(f"a registry entry must be a dict, got {type(entry).__name__}")
    _check_run_id(entry.get("run_id"))
    if any(not isinstance(k, str) for k in entry):
        raise ValueError(f"registry entry {entry['run_id']!r}: field names must be strings")
    _check_task(entry.get("task"))
    for field in ("config_hash", "checkpoint_path"):
        if not isinstance(entry.get(field), (str, os.PathLike)) or not os.fspath(entry[field]):
            raise ValueError(f"registry entry {entry['run_id']!r}: {field} must be a non-empty string")
    for field in ("metrics", "metadata"):
        if not isinstance(entry.get(field, {}), dict):
            raise ValueError(f"registry entry {entry['run_id']!r}: {field} must be a dict, "
                             f"got {type(entry[field]).__name__}")
    for field in (*OPTIONAL_STRING_FIELDS, "checkpoint_sha256"):
        if entry.get(field) is not None and not isinstance(entry[field], (str, os.PathLike)):
            raise ValueError(f"registry entry {entry['run_id']!r}: {field} must be a string or None, "
                             f"got {type(entry[field]).__name__} {entry[field]!r}")
    # A NaN metric would silently rank as "no value"; refuse it so the caller sees the diverged run.
    stored = {k: to_json_value(v, k, finite=k == "metrics") for k, v in entry.items()}
    stored["timestamp"] = _check_timestamp(stored.get("timestamp"), entry["run_id"])
    stored.setdefault("metrics", {})
    stored["metadata"] = {**{k: None for k in REQUIRED_METADATA}, **(stored.get("metadata") or {})}
    for field in _PATH_FIELDS:
        if isinstance(stored.get(field), str) and stored[field]:
            stored[field] = os.path.abspath(stored[field])
    ordered = {k: stored[k] for k in ENTRY_FIELDS if k in stored}
    ordered.update((k, v) for k, v in stored.items() if k not in ordered)
    problem = value_problem(ordered)  # what the file parser would refuse later must not be written now
    if problem:
        raise ValueError(f"registry entry {entry['run_id']!r}: {problem}")
    return ordered


def _check_run_id(run_id: object) -> str:
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"run_id must be a non-empty string, got {type(run_id).__name__} {run_id!r}")
    return run_id


def _check_task(task: object) -> str:
    if not isinstance(task, str) or not _TASK_NAME.fullmatch(task):
        raise ValueError(f"invalid task name {task!r}: a task is a subtask name such as 'vehicle_detection' "
                         "(letters, digits, '_', '-' or '.'; no spaces or path separators)")
    return task


def _check_export_path(path: Path) -> Path:
    if path.is_dir():
        raise UserError(f"cannot export the registry to {path}: it is a folder; give a file name, "
                        f"e.g. {path / 'model_registry.csv'}")
    if not path.parent.is_dir():
        what = "is a file, not a folder" if path.parent.exists() else "does not exist"
        raise UserError(f"cannot export the registry to {path}: the folder {path.parent} {what}; "
                        "create it first or choose another path")
    return path


def _check_timestamp(value: object, run_id: str) -> str:
    if value is None:
        return datetime.now().isoformat(timespec="microseconds")
    if not isinstance(value, str):
        raise ValueError(f"registry entry {run_id!r}: timestamp must be an ISO 8601 string, got {value!r}")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"registry entry {run_id!r}: timestamp {value!r} is not ISO 8601 "
                         "(e.g. 2024-01-15T14:30:22.123456)") from None
    return value


def _flatten(entry: dict) -> dict:
    row = {}
    for key, value in entry.items():
        _flatten_into(row, key, value)
    return row


def _flatten_into(row: dict, prefix: str, value: object) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten_into(row, f"{prefix}.{key}", item)
    elif isinstance(value, list):
        row[prefix] = json.dumps(value, ensure_ascii=False)
    else:
        row[prefix] = "" if value is None else value


def to_json_value(value: object, where: str, *, finite: bool = False, depth: int = 0) -> object:
    """A JSON-safe copy of `value`: Paths and datetimes become strings, numpy/torch scalars numbers.

    A non-finite float becomes null (the file stays standard JSON for jq and browsers), or is a ValueError
    naming it when `finite` (metrics: a NaN there means the run diverged, not "no value").
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        if finite:
            raise ValueError(f"registry entry field {where} is {value!r}; metric values must be finite numbers "
                             "(record a missing value as None)")
        return None
    if depth >= MAX_DEPTH:
        raise ValueError(f"registry entry field {where} is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"registry entry field {where} has a non-string key {key!r}")
            out[key] = to_json_value(item, f"{where}.{key}", finite=finite, depth=depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [to_json_value(v, f"{where}[{i}]", finite=finite, depth=depth + 1) for i, v in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    item: Optional[Callable] = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            scalar = item()
        except (TypeError, ValueError):
            scalar = value  # not a scalar after all (e.g. a numpy array of several values)
        if scalar is not value:
            return to_json_value(scalar, where, finite=finite, depth=depth + 1)
    raise ValueError(f"registry entry field {where} has a value of type {type(value).__name__} "
                     "that JSON cannot store; pass numbers, strings, lists or dicts")
