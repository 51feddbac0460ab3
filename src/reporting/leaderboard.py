"""Evaluate every registered run of a subtask on one test set and rank them (a batch-evaluation loop over the
registry, as one command).

Each run is evaluated with its own config.yaml and checkpoint. A result is cached beside the run as
`<run dir>/evaluations/leaderboard-<key>.json`, the key being a hash of (checkpoint sha256, test-data content
fingerprint, evaluation settings), so asking again costs only the runs that are new or changed.
"""

import contextlib
import hashlib
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional

from src.common.atomic import atomic_write_text
from src.common.errors import UserError
from src.common.report import warn
from src.common.run_dir import CONFIG_FILE, EVALUATIONS_DIR, METADATA_FILE
from src.reporting.run_files import read_json, read_yaml

CACHE_VERSION = 1
CACHE_PREFIX = "leaderboard-"
# What happened to each run.
EVALUATED, CACHED, MISSING, OTHER_CLASSES, FAILED = "evaluated", "cached", "missing", "other classes", "failed"


@dataclass
class LeaderboardRequest:
    subtask: str
    test_data: str
    data_yaml: Optional[str] = None  # the test set's class names; without it every run uses its own
    metric: Optional[str] = None  # default: test/<the task's best-model metric>, e.g. test/mAP50-95
    mode: Optional[str] = None  # "max" / "min"; default: min for losses, else max
    top: Optional[int] = None
    registry_path: Optional[Path] = None
    progress: bool = True  # a progress bar on stderr


@dataclass
class _Run:
    entry: Dict[str, Any]
    run_dir: Path
    status: str = ""
    note: str = ""
    family: Optional[str] = None
    verify: str = "not checked"
    same_classes: Optional[bool] = None
    cache_path: Optional[Path] = None
    result: Dict[str, Any] = field(default_factory=dict)


def build_leaderboard(request: LeaderboardRequest) -> Dict[str, Any]:
    """Evaluate what is not cached, rank, and return {subtask, test_data, metric, mode, rows, ...}."""
    from src.common.fingerprint import fingerprint_dataset, split_fingerprint_root
    from src.common.model_registry import ModelRegistry

    _check_request(request)
    registry = ModelRegistry(request.registry_path)
    try:
        entries = registry.find_entries_by_task(request.subtask)
    except ValueError as exc:
        raise UserError(f"leaderboard: {exc}") from None
    if not entries:
        raise UserError(f"no runs of subtask {request.subtask!r} in registry {registry.path}; see "
                        "`street-scene registry list` for the subtasks it holds")
    test_names = _test_class_names(request.data_yaml)
    fingerprint = fingerprint_dataset(split_fingerprint_root(request.test_data))  # content only; names per run
    runs = [_inspect(entry, test_names, fingerprint) for entry in entries]
    todo = [r for r in runs if not r.status]
    bar = Progress(len(todo), request.progress)
    for run in todo:
        _evaluate(run, request, fingerprint)
        bar.step()
    bar.close()
    metric, mode = _metric_and_mode(request, runs)
    return {"subtask": request.subtask, "test_data": str(Path(request.test_data).resolve()),
            "test_fingerprint": fingerprint, "test_class_names": test_names, "metric": metric, "mode": mode,
            "registry": str(registry.path), "evaluated": len(todo),
            "rows": rank_rows(runs, metric, mode, request.top)}


def _check_request(request: LeaderboardRequest) -> None:
    if request.mode not in (None, "max", "min"):
        raise UserError(f"mode must be max or min, got {request.mode!r}")
    if request.top is not None and request.top < 1:
        raise UserError(f"--top must be 1 or more, got {request.top}")
    if request.metric is not None and not request.metric.startswith("test/"):
        raise UserError(f"--metric {request.metric!r}: leaderboard metrics are test-set metrics, e.g. test/mAP50 "
                        "or test/mIoU")


def _test_class_names(data_yaml: Optional[str]) -> Optional[List[str]]:
    if data_yaml is None:
        return None
    from src.data.data_yaml import parse_class_names, read_dataset_yaml

    return parse_class_names(read_dataset_yaml(data_yaml), data_yaml)


def _inspect(entry: Dict[str, Any], test_names, fingerprint) -> _Run:
    """Everything known without evaluating: missing files, checkpoint sha256, class names, a cached result."""
    checkpoint = Path(entry["checkpoint_path"])
    run = _Run(entry, Path(entry.get("run_dir") or checkpoint.parent))
    if not run.run_dir.is_dir() or not checkpoint.is_file():
        run.status, run.verify = MISSING, "missing"
        run.note = f"{'run directory' if not run.run_dir.is_dir() else 'checkpoint'} not found"
        return run
    sha = _sha256(checkpoint)
    recorded = entry.get("checkpoint_sha256")
    run.verify = "ok" if sha == recorded else "not recorded" if not recorded else "MISMATCH"
    meta, problem = read_yaml(run.run_dir / METADATA_FILE)
    config, config_problem = read_yaml(run.run_dir / CONFIG_FILE)
    if problem or config_problem or not isinstance(meta, dict) or not isinstance(config, dict):
        run.status, run.note = FAILED, problem or config_problem or "metadata.yaml or config.yaml is not a mapping"
        return run
    run.family = meta.get("task")
    names = run_class_names(meta, entry)
    if test_names is not None:
        run.same_classes = names == test_names
        if not run.same_classes:
            run.status, run.note = OTHER_CLASSES, f"trained on classes {names}"
            return run
    settings = {"evaluation": (config.get(run.family) or {}).get("evaluation"), "device": config.get("device"),
                "names": names}
    run.cache_path = run.run_dir / EVALUATIONS_DIR / f"{CACHE_PREFIX}{cache_key(sha, fingerprint, settings)}.json"
    cached, _ = read_json(run.cache_path) if run.cache_path.is_file() else (None, None)
    if isinstance(cached, dict) and isinstance(cached.get("result"), dict):
        run.status, run.result = CACHED, cached["result"]
    return run


def run_class_names(meta: Dict[str, Any], entry: Dict[str, Any]) -> Optional[List[str]]:
    """The class names a run was trained with: metadata `data.names`, else its training data fingerprint's."""
    names = (meta.get("data") or {}).get("names") if isinstance(meta.get("data"), dict) else None
    if names is None:
        names = ((entry.get("dataset") or {}).get("train") or {}).get("names")
    return list(names) if isinstance(names, list) else None


def cache_key(checkpoint_sha256: str, fingerprint: Dict[str, Any], settings: Dict[str, Any]) -> str:
    blob = json.dumps({"version": CACHE_VERSION, "checkpoint_sha256": checkpoint_sha256,
                       "test_data": fingerprint.get("sha256"), "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _evaluate(run: _Run, request: LeaderboardRequest, fingerprint: Dict[str, Any]) -> None:
    from src.pipelines.evaluation import EvalRequest, evaluate

    eval_request = EvalRequest(
        config_path=run.run_dir / CONFIG_FILE, task=run.family, subtask=request.subtask,
        test_data=request.test_data, checkpoint_path=Path(run.entry["checkpoint_path"]),
        data_yaml=request.data_yaml, save_results=False)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout is the table (or JSON)
            run.result = evaluate(eval_request)
    except UserError as exc:  # this run cannot be evaluated here; the others still can
        run.status, run.note = FAILED, str(exc)
        return
    run.status = EVALUATED
    record = {"kind": "leaderboard", "key": run.cache_path.stem.removeprefix(CACHE_PREFIX),
              "evaluated_at": datetime.now().isoformat(timespec="seconds"),
              "test_data": {"test": str(Path(request.test_data).resolve())},
              "test_data_fingerprints": {"test": fingerprint}, "result": run.result}
    try:
        run.cache_path.parent.mkdir(exist_ok=True)
        atomic_write_text(run.cache_path, json.dumps(record, indent=2, default=str) + "\n")
    except OSError as exc:  # a read-only model store: the result is shown, just not cached
        warn(f"warning: could not cache the result in {run.cache_path}: {exc.strerror}")


def _metric_and_mode(request: LeaderboardRequest, runs: List[_Run]):
    metric = request.metric
    if metric is None:
        import importlib

        from src.tasks import TASKS

        family = next((r.family for r in runs if r.family in TASKS), None)
        if family is None:
            return "test/?", request.mode or "max"
        best = importlib.import_module(f"src.tasks.{family}.task").BEST_METRIC
        metric = "test/" + best.split("/", 1)[1]
    return metric, request.mode or ("min" if "loss" in metric else "max")


def rank_rows(runs: List[_Run], metric: str, mode: str, top: Optional[int]) -> List[Dict[str, Any]]:
    """Ranked rows (best first, `gap` to the best), then the runs without a value, in registry order."""
    def value_of(run):
        value = (run.result.get("metrics") or {}).get(metric)
        return value if type(value) in (int, float) else None

    scored = [r for r in runs if value_of(r) is not None]
    scored.sort(key=lambda r: -value_of(r) if mode == "max" else value_of(r))
    if top is not None:
        scored = scored[:top]
    rest = [r for r in runs if value_of(r) is None]
    if any(r.status in (EVALUATED, CACHED) for r in rest):
        for r in rest:
            if r.status in (EVALUATED, CACHED):
                r.note = r.note or f"no {metric} in the result"
    best = value_of(scored[0]) if scored else None
    rows = []
    for rank, run in enumerate(scored + rest, 1):
        value = value_of(run)
        rows.append({
            "rank": rank if value is not None else None, "run_id": run.entry["run_id"], "value": value,
            "gap": None if value is None else value - best, "config_hash": run.entry.get("config_hash"),
            "git_commit": (run.entry.get("metadata") or {}).get("git_commit"),
            "git_dirty": (run.entry.get("metadata") or {}).get("git_dirty"), "same_classes": run.same_classes,
            "verify": run.verify, "status": run.status, "note": run.note, "run_dir": str(run.run_dir),
            "cache": str(run.cache_path) if run.cache_path else None, "metrics": run.result.get("metrics"),
        })
    return rows


class Progress:
    """`leaderboard [####......] 3/8 evaluated, 5 left` on stderr; one line per step when not a terminal."""

    def __init__(self, total: int, enabled: bool, width: int = 30):
        self.total, self.done, self.width = total, 0, width
        self.enabled = enabled and total > 0
        self.tty = sys.stderr.isatty()
        if self.enabled:
            self._show()

    def step(self) -> None:
        self.done += 1
        if self.enabled:
            self._show()

    def _show(self) -> None:
        filled = self.width * self.done // self.total
        line = (f"leaderboard [{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} evaluated, "
                f"{self.total - self.done} left")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)
