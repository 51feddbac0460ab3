"""What differs between two runs, from their run directories alone (no registry needed); and the per-epoch trace
comparison that `reproduce` and `check-determinism` share with `diff`.

Compared: the resolved config (dotted keys), metadata (versions, git commit/dirty/diff, seed, device, hardware,
data paths and fingerprints, determinism settings, command, status), installed packages (environment.txt),
final metrics (`result.metrics`) and the per-epoch trace (metrics.csv).
Not compared, because they differ between any two runs and say nothing about the result: run id,
start/finish times, the checkpoint file name, and timing metrics (names containing time/elapsed/duration/speed).
"""

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from src.common.checkpoint import file_sha256
from src.common.dictdiff import MISSING, close, diff_dicts, flatten, format_changes, is_number, same_value
from src.common.metadata import read_metadata
from src.common.run_dir import GIT_DIFF_FILE, RunDir, resolve_run

IGNORED_METADATA = ("run_id", "started_at", "finished_at", "result.checkpoint", "result.metrics")
TIMING_METRIC = re.compile(r"(^|[/_.\-])(time|elapsed|duration|speed)", re.IGNORECASE)
_TEXT_LIMIT = 20  # per-epoch lines shown in text form; --json has them all


def diff_runs(run_a: Path, run_b: Path) -> Dict[str, Any]:
    """Differences from run A to run B (each a run dir path or a run id under the output root)."""
    dir_a, dir_b = resolve_run(str(run_a)), resolve_run(str(run_b))
    meta_a, meta_b = read_metadata(dir_a), read_metadata(dir_b)
    final_a, final_b = _final_metrics(meta_a), _final_metrics(meta_b)
    diff = {
        "run_a": str(dir_a),
        "run_b": str(dir_b),
        "config": _records(diff_dicts(RunDir(dir_a).read_config(), RunDir(dir_b).read_config())),
        "metadata": _records(_metadata_changes(dir_a, meta_a, dir_b, meta_b)),
        "environment": _environment_changes(dir_a, dir_b),
        "metrics": _metric_changes(final_a, final_b),
        "epochs": _epoch_changes(read_trace(dir_a), read_trace(dir_b)),
        "ignored": [*IGNORED_METADATA, "timing metrics"],
    }
    diff["identical"] = not (diff["config"] or diff["metadata"] or diff["environment"] or diff["metrics"]
                             or _epoch_lines(diff["epochs"]))
    return diff


def format_diff(diff: Dict[str, Any]) -> str:
    """The diff as text: `key: old -> new` lines grouped by section."""
    lines = [f"A: {diff['run_a']}", f"B: {diff['run_b']}"]
    for section in ("config", "metadata"):
        changes = [(c["key"], c.get("a", MISSING), c.get("b", MISSING)) for c in diff[section]]
        lines += _section(section, format_changes(changes))
    lines += _section("environment (installed packages)", diff["environment"])
    lines += _section("final metrics", [_metric_line(c) for c in diff["metrics"]])
    lines += _section("metrics per epoch", _epoch_lines(diff["epochs"]))
    if diff["identical"]:
        lines.append("no differences (ignored: run ids, timestamps, timing metrics)")
    return "\n".join(lines)


def _section(title: str, body: List[str]) -> List[str]:
    return [f"{title} ({len(body)}):", *(f"  {line}" for line in body)] if body else []


def _records(changes) -> List[Dict[str, Any]]:
    """(key, old, new) -> JSON-ready dicts; `a`/`b` are left out where the key is absent."""
    out = []
    for key, old, new in changes:
        kind = "added" if old is MISSING else "removed" if new is MISSING else "changed"
        record = {"key": key, "change": kind}
        if old is not MISSING:
            record["a"] = old
        if new is not MISSING:
            record["b"] = new
        out.append(record)
    return out


def _metadata_changes(dir_a: Path, meta_a: dict, dir_b: Path, meta_b: dict):
    a, b = _comparable(meta_a), _comparable(meta_b)
    # Two dirty runs at one commit can still run different code: compare the recorded diffs too.
    a["git_diff_sha256"], b["git_diff_sha256"] = _file_sha(dir_a / GIT_DIFF_FILE), _file_sha(dir_b / GIT_DIFF_FILE)
    return diff_dicts(a, b)


def _comparable(meta: dict) -> Dict[str, Any]:
    flat = flatten(meta)
    return {k: v for k, v in flat.items()
            if not any(k == ig or k.startswith(ig + ".") for ig in IGNORED_METADATA)}


def _file_sha(path: Path) -> Optional[str]:
    return file_sha256(path) if path.is_file() else None


def _environment_changes(dir_a: Path, dir_b: Path) -> List[str]:
    """`name: 1.0 -> 2.0` for packages whose environment.txt lines differ (only when both runs have one)."""
    env_a, env_b = RunDir(dir_a).read_packages(), RunDir(dir_b).read_packages()
    if env_a is None or env_b is None:
        return []
    return [f"{name}: {env_a.get(name, MISSING)} -> {env_b.get(name, MISSING)}"
            for name in sorted(set(env_a) | set(env_b)) if env_a.get(name) != env_b.get(name)]


def _final_metrics(meta: dict) -> Dict[str, Any]:
    result = meta.get("result")
    metrics = result.get("metrics") if isinstance(result, dict) else None
    return metrics if isinstance(metrics, dict) else {}


def _metric_changes(a: Dict[str, Any], b: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    for key in sorted(set(a) | set(b)):
        if TIMING_METRIC.search(key) or same_value(a.get(key, MISSING), b.get(key, MISSING)):
            continue
        record = _records([(key, a.get(key, MISSING), b.get(key, MISSING))])[0]
        if is_number(record.get("a")) and is_number(record.get("b")):
            record["delta"] = record["b"] - record["a"]
        out.append(record)
    return out


def _metric_line(change: Dict[str, Any]) -> str:
    line = format_changes([(change["key"], change.get("a", MISSING), change.get("b", MISSING))])[0]
    return line + (f" ({change['delta']:+.6g})" if "delta" in change else "")


def read_trace(run_dir: Path) -> Optional[Dict[int, Dict[str, Any]]]:
    """{epoch: {metric: value}} from metrics.csv, timing columns dropped; None when the run has no metrics.csv.
    Rows without an `epoch` column are numbered from 1."""
    run = RunDir(Path(run_dir))
    if not run.metrics.is_file():
        return None
    trace = {}
    for number, row in enumerate(run.read_metrics(), 1):
        epoch = row.pop("epoch", None)
        if isinstance(epoch, float) and epoch.is_integer():
            epoch = int(epoch)
        trace[epoch if is_number(epoch) else number] = {k: v for k, v in row.items() if not TIMING_METRIC.search(k)}
    return trace


def compare_traces(a: Dict[int, dict], b: Dict[int, dict], rtol: float = 0.0, atol: float = 0.0) -> Dict[str, Any]:
    """Epoch-by-epoch differences of two traces: every value that is not the same (same_value) on an epoch and
    column both have, with whether it is within `rtol`/`atol`; epochs and columns only one side has."""
    cols_a, cols_b = {k for row in a.values() for k in row}, {k for row in b.values() for k in row}
    shared = sorted(cols_a & cols_b)
    differences = [{"epoch": e, "key": k, "a": a[e].get(k), "b": b[e].get(k),
                    "within_tolerance": close(a[e].get(k), b[e].get(k), rtol, atol)}
                   for e in sorted(set(a) & set(b)) for k in shared if not same_value(a[e].get(k), b[e].get(k))]
    return {"epochs_a": len(a), "epochs_b": len(b),
            "only_a": sorted(set(a) - set(b)), "only_b": sorted(set(b) - set(a)),
            "columns_only_a": sorted(cols_a - cols_b), "columns_only_b": sorted(cols_b - cols_a),
            "differences": differences}


def _epoch_changes(trace_a: Optional[dict], trace_b: Optional[dict]) -> Dict[str, Any]:
    """The per-epoch section of a diff: traces compared exactly (no tolerance)."""
    out = {"epochs_a": None if trace_a is None else len(trace_a), "epochs_b": None if trace_b is None else len(trace_b),
           "only_a": [], "only_b": [], "columns_only_a": [], "columns_only_b": [],
           "first_difference_epoch": None, "differences": []}
    if trace_a is None or trace_b is None:
        return out
    out.update(compare_traces(trace_a, trace_b))
    out["differences"] = [{k: d[k] for k in ("epoch", "key", "a", "b")} for d in out["differences"]]
    if out["differences"]:
        out["first_difference_epoch"] = out["differences"][0]["epoch"]
    return out


def _epoch_lines(ep: Dict[str, Any]) -> List[str]:
    if ep["epochs_a"] is None or ep["epochs_b"] is None:
        if ep["epochs_a"] == ep["epochs_b"]:
            return []
        return [f"metrics.csv only in {'A' if ep['epochs_b'] is None else 'B'}"]
    lines = []
    if ep["only_a"] or ep["only_b"]:
        lines.append(f"epochs: A has {ep['epochs_a']}, B has {ep['epochs_b']}")
    for side in ("a", "b"):
        if ep[f"columns_only_{side}"]:
            lines.append(f"columns only in {side.upper()}: {', '.join(ep[f'columns_only_{side}'])}")
    if ep["first_difference_epoch"] is not None:
        lines.append(f"first difference at epoch {ep['first_difference_epoch']}")
    for d in ep["differences"][:_TEXT_LIMIT]:
        lines.append(f"epoch {d['epoch']} {d['key']}: {_show(d['a'])} -> {_show(d['b'])}")
    if len(ep["differences"]) > _TEXT_LIMIT:
        lines.append(f"... and {len(ep['differences']) - _TEXT_LIMIT} more (use --json for all)")
    return lines


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


def to_json(diff: Dict[str, Any]) -> str:
    return json.dumps(diff, indent=2, default=str)
