"""What the HTML report shows, gathered from the registry and each run directory as plain JSON-ready dicts.

Nothing here raises for a damaged or vanished run: a run whose directory is gone is `missing`, an unreadable file
is a `problems` line of that run. Only the registry itself being unreadable stops the report.
"""

import hashlib
import json
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional

from src.common.dictdiff import MISSING, diff_dicts
from src.common.run_dir import CONFIG_FILE, METADATA_FILE, METRICS_FILE
from src.reporting.run_files import evaluation_files, read_curves, read_exports, read_json, read_yaml

# metadata.yaml keys shown as provenance (besides seed, git, data fingerprints and determinism).
VERSION_KEYS = ("python_version", "pytorch_version", "torchvision_version", "ultralytics_version", "numpy_version",
                "torchmetrics_version", "street_scene_version", "cuda_version", "cudnn_version")
HOST_KEYS = ("device", "cpu_model", "num_threads", "hostname", "os", "world_size")
RANK_METRIC = "best_val_metric"  # every task's registry metric that chose best_model.pth (higher is better)
_HASH_THREADS = 4  # hashlib releases the GIL: checkpoints hash in parallel
# Reading run directories is YAML parsing (CPU, under the GIL): above this many runs it is spread over processes.
_PARALLEL_FROM = 64


def collect_report(registry_path: Optional[Path] = None, subtask: Optional[str] = None) -> Dict[str, Any]:
    """{generated_at, registry, subtask, subtasks: [...], runs: [...]} for every entry (of `subtask`)."""
    from src.common.errors import UserError
    from src.common.model_registry import ModelRegistry

    registry = ModelRegistry(registry_path)
    entries = registry.list_entries()
    if subtask is not None:
        present = sorted({e["task"] for e in entries})
        entries = [e for e in entries if e["task"] == subtask]
        if not entries and present:
            raise UserError(f"no runs of subtask {subtask!r} in registry {registry.path}; it holds "
                            f"{', '.join(present)}")
    shas = _checkpoint_hashes(entries)
    runs = _run_records([(entry, shas.get(entry["checkpoint_path"])) for entry in entries])
    subtasks = _subtasks(runs)
    for group in subtasks:
        _add_config_diffs([r for r in runs if r["subtask"] == group["name"]], group["best_run"])
    shared = _Shared()
    for run in runs:
        run.pop("_config", None)
        _share_repeated(run, shared)
    return {"generated_at": datetime.now().isoformat(timespec="seconds"), "registry": str(registry.path),
            "subtask": subtask, "subtasks": subtasks, "runs": runs, "shared": shared.values}


class _Shared:
    """Values most runs have in common (versions, host, data fingerprints, curve columns), stored once in the
    page: a run holds their index in `shared`. Keeps 1,000 runs in a few MB."""

    def __init__(self):
        self.values: List[Any] = []
        self._index: Dict[str, int] = {}

    def ref(self, value: Any) -> int:
        key = json.dumps(value, sort_keys=True)
        if key not in self._index:
            self._index[key] = len(self.values)
            self.values.append(value)
        return self._index[key]


def _share_repeated(run: Dict[str, Any], shared: _Shared) -> None:
    provenance = run.get("provenance") or {}
    for key in ("versions", "host", "datasets", "determinism"):
        if key in provenance:
            provenance[key] = shared.ref(provenance[key])
    if "curves" in run:
        run["curves"] = {"columns": shared.ref(list(run["curves"])), "values": list(run["curves"].values())}


def _checkpoint_hashes(entries: List[Dict[str, Any]]) -> Dict[str, Optional[str]]:
    paths = [e["checkpoint_path"] for e in entries]
    with ThreadPoolExecutor(_HASH_THREADS) as pool:
        return dict(zip(paths, pool.map(_sha256_or_none, paths)))


def _sha256_or_none(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def _run_records(jobs: List[tuple]) -> List[Dict[str, Any]]:
    """_run_record for each (entry, sha), in order; in forked worker processes when there are many (the records
    are plain dicts this code built, sent back to the parent)."""
    workers = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if len(jobs) < _PARALLEL_FROM or workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [_run_record(entry, sha) for entry, sha in jobs]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(_run_record_job, jobs, chunksize=max(1, len(jobs) // (4 * workers))))


def _run_record_job(job: tuple) -> Dict[str, Any]:
    return _run_record(*job)


def _run_record(entry: Dict[str, Any], sha: Optional[str]) -> Dict[str, Any]:
    run_dir = Path(entry.get("run_dir") or Path(entry["checkpoint_path"]).parent)
    record = {"id": entry["run_id"], "subtask": entry["task"], "status": entry.get("status"),
              "timestamp": entry.get("timestamp"), "config_hash": entry.get("config_hash"),
              "metrics": _finite(entry.get("metrics") or {}), "run_dir": str(run_dir), "problems": [],
              "missing": not run_dir.is_dir()}
    if record["missing"]:
        record["problems"].append(f"run directory {run_dir} not found")
        record["verify"] = {"checkpoint": "missing", "sha256": "not checked", "config_hash": "not checked"}
        record["provenance"] = _provenance({}, entry)
        return record
    meta, problem = read_yaml(run_dir / METADATA_FILE)
    meta = meta if isinstance(meta, dict) else {}
    config, config_problem = read_yaml(run_dir / CONFIG_FILE)
    record["_config"] = config if isinstance(config, dict) else None
    curves, curves_problem = read_curves(run_dir / METRICS_FILE)
    exports, exports_problem = read_exports(run_dir)
    record["problems"] += [p for p in (problem, config_problem, curves_problem, exports_problem) if p]
    record.update(family=meta.get("task"), provenance=_provenance(meta, entry), curves=curves,
                  exports=_finite(exports), evaluations=_evaluations(run_dir),
                  verify=_verify(entry, sha, record["_config"]), reproduce=_reproduce(entry["run_id"], meta))
    return record


def _provenance(meta: Dict[str, Any], entry: Dict[str, Any]) -> Dict[str, Any]:
    """Seed and its source, git, versions, host, dataset fingerprints and determinism; registry values where the
    run directory has none (a missing run)."""
    recorded = entry.get("metadata") or {}
    pick = lambda key: meta.get(key, recorded.get(key))  # noqa: E731
    datasets = meta.get("dataset_fingerprints") or entry.get("dataset") or {}
    return _finite({
        "seed": pick("seed"), "seed_source": meta.get("seed_source"),
        "git_commit": pick("git_commit"), "git_branch": pick("git_branch"), "git_dirty": pick("git_dirty"),
        "versions": {k: pick(k) for k in VERSION_KEYS if pick(k) is not None},
        "host": {k: pick(k) for k in HOST_KEYS if pick(k) is not None},
        "datasets": {split: _fingerprint_summary(fp) for split, fp in datasets.items()}
        if isinstance(datasets, dict) else {},
        "determinism": meta.get("determinism") if isinstance(meta.get("determinism"), dict) else {},
        "started_at": meta.get("started_at"), "finished_at": meta.get("finished_at"),
    })


def _fingerprint_summary(fp: Any) -> Any:
    if not isinstance(fp, dict):
        return fp
    return {"sha256": fp.get("sha256"), "files": fp.get("files"), "bytes": fp.get("bytes"), "names": fp.get("names")}


def _verify(entry: Dict[str, Any], sha: Optional[str], config: Optional[Dict[str, Any]]) -> Dict[str, str]:
    """What `street-scene registry verify` checks: checkpoint present, its sha256, the config hash."""
    from src.common.config_manager import compute_config_hash

    recorded = entry.get("checkpoint_sha256")
    if sha is None:
        state = {"checkpoint": "missing", "sha256": "not checked"}
    else:
        state = {"checkpoint": "ok", "sha256": "ok" if sha == recorded else "no sha256 recorded" if not recorded
                 else f"mismatch (file {sha[:12]}, registry {str(recorded)[:12]})"}
    if config is None:
        state["config_hash"] = "config.yaml unreadable"
    else:
        try:
            actual = compute_config_hash(config)
        except ValueError as exc:  # NaN in a hand-edited config
            actual = f"unhashable ({exc})"
        state["config_hash"] = "ok" if actual == entry.get("config_hash") else \
            f"mismatch (config.yaml {actual}, registry {entry.get('config_hash')})"
    return state


def _evaluations(run_dir: Path) -> List[Dict[str, Any]]:
    """Saved evaluation results (`evaluate` and `leaderboard`), oldest first."""
    found = []
    for path in evaluation_files(run_dir):
        data, problem = read_json(path)
        if problem or not isinstance(data, dict):
            found.append({"file": path.name, "problem": problem or "not a JSON object"})
            continue
        result = data.get("result") if isinstance(data.get("result"), dict) else data
        fps = data.get("test_data_fingerprints") or {}
        test_fp = fps.get("test") if isinstance(fps, dict) else None
        found.append(_finite({
            "file": path.name, "kind": data.get("kind") or "evaluate", "evaluated_at": data.get("evaluated_at"),
            "test_data": (data.get("test_data") or {}).get("test") if isinstance(data.get("test_data"), dict)
            else None,
            "test_sha256": test_fp.get("sha256") if isinstance(test_fp, dict) else None,
            "metrics": result.get("metrics") if isinstance(result.get("metrics"), dict) else {},
        }))
    return found


def _reproduce(run_id: str, meta: Dict[str, Any]) -> List[str]:
    commands = [f"street-scene reproduce {run_id}"]
    if isinstance(meta.get("command"), str):
        where = f"cd {meta['cwd']} && " if isinstance(meta.get("cwd"), str) else ""
        commands.append(where + meta["command"])
    return commands


def _subtasks(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One group per subtask (first-seen order): its best run by the registry's best_val_metric, the metric
    columns of its leaderboard, and the test sets its cached leaderboard results cover."""
    groups: Dict[str, Dict[str, Any]] = {}
    for run in runs:
        group = groups.setdefault(run["subtask"], {"name": run["subtask"], "runs": [], "metric_names": [],
                                                   "test_sets": {}})
        group["runs"].append(run["id"])
        for name in run["metrics"]:
            if name not in group["metric_names"]:
                group["metric_names"].append(name)
        for ev in run.get("evaluations", []):
            if ev.get("kind") == "leaderboard" and ev.get("test_sha256"):
                group["test_sets"].setdefault(ev["test_sha256"], ev.get("test_data"))
    for group in groups.values():
        group["best_run"] = _best_run([r for r in runs if r["subtask"] == group["name"]])
        group["test_sets"] = [{"sha256": sha, "path": path} for sha, path in group["test_sets"].items()]
    return list(groups.values())


def _best_run(runs: List[Dict[str, Any]]) -> Optional[str]:
    scored = [r for r in runs if type(r["metrics"].get(RANK_METRIC)) in (int, float)]
    return max(scored, key=lambda r: r["metrics"][RANK_METRIC])["id"] if scored else None


def _add_config_diffs(runs: List[Dict[str, Any]], best_id: Optional[str]) -> None:
    """`diff`: [(dotted key, best run's value, this run's value)] against the subtask's best run."""
    best = next((r for r in runs if r["id"] == best_id), None)
    base = best.get("_config") if best else None
    for run in runs:
        if base is None or run.get("_config") is None:
            run["diff"] = None
        else:
            run["diff"] = [[key, _shown(old), _shown(new)] for key, old, new in diff_dicts(base, run["_config"])]


def _shown(value: Any) -> Any:
    return value if value is MISSING else _finite(value)


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become their text, non-JSON types their str()."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
