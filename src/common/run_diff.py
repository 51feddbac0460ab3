"""What differs between two runs, from their run directories alone (no registry needed).

Compared: the resolved config (dotted keys), metadata (versions, git commit/dirty/diff, seed, device, hardware,
data paths and fingerprints, determinism settings, command, status), installed packages (environment.txt),
final metrics (`result.metrics`) and the per-epoch trace (metrics.csv).
Not compared, because they differ between any two runs and say nothing about the result: run id,
start/finish times, the checkpoint file name, and timing metrics (names containing time/elapsed/duration/speed).
"""

import csv
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from src.common.dictdiff import MISSING, diff_dicts, flatten, format_changes
from src.common.errors import UserError
from src.common.metadata import read_metadata
from src.common.run_dir import resolve_run
from src.common.yaml_io import load_yaml

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
        "config": _records(diff_dicts(_read_config(dir_a), _read_config(dir_b))),
        "metadata": _records(_metadata_changes(dir_a, meta_a, dir_b, meta_b)),
        "environment": _environment_changes(dir_a, dir_b),
        "metrics": _metric_changes(final_a, final_b),
        "epochs": _epoch_changes(dir_a / "metrics.csv", dir_b / "metrics.csv"),
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


def _read_config(run_dir: Path) -> Dict[str, Any]:
    config = load_yaml(run_dir / "config.yaml")
    if not isinstance(config, dict):
        raise UserError(f"{run_dir / 'config.yaml'} is not a mapping; the run directory is damaged")
    return config


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
    a["git_diff_sha256"], b["git_diff_sha256"] = _file_sha(dir_a / "git.diff"), _file_sha(dir_b / "git.diff")
    return diff_dicts(a, b)


def _comparable(meta: dict) -> Dict[str, Any]:
    flat = flatten(meta)
    return {k: v for k, v in flat.items()
            if not any(k == ig or k.startswith(ig + ".") for ig in IGNORED_METADATA)}


def _file_sha(path: Path) -> Optional[str]:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _environment_changes(dir_a: Path, dir_b: Path) -> List[str]:
    """`name: 1.0 -> 2.0` for packages whose environment.txt lines differ (only when both runs have one)."""
    env_a, env_b = _packages(dir_a / "environment.txt"), _packages(dir_b / "environment.txt")
    if env_a is None or env_b is None:
        return []
    return [f"{name}: {env_a.get(name, MISSING)} -> {env_b.get(name, MISSING)}"
            for name in sorted(set(env_a) | set(env_b)) if env_a.get(name) != env_b.get(name)]


def _packages(path: Path) -> Optional[Dict[str, str]]:
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line)


def _final_metrics(meta: dict) -> Dict[str, Any]:
    result = meta.get("result")
    metrics = result.get("metrics") if isinstance(result, dict) else None
    return metrics if isinstance(metrics, dict) else {}


def _metric_changes(a: Dict[str, Any], b: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    for key in sorted(set(a) | set(b)):
        if TIMING_METRIC.search(key) or _same_value(a.get(key, MISSING), b.get(key, MISSING)):
            continue
        record = _records([(key, a.get(key, MISSING), b.get(key, MISSING))])[0]
        if _is_number(record.get("a")) and _is_number(record.get("b")):
            record["delta"] = record["b"] - record["a"]
        out.append(record)
    return out


def _metric_line(change: Dict[str, Any]) -> str:
    line = format_changes([(change["key"], change.get("a", MISSING), change.get("b", MISSING))])[0]
    return line + (f" ({change['delta']:+.6g})" if "delta" in change else "")


def _epoch_changes(csv_a: Path, csv_b: Path) -> Dict[str, Any]:
    """Per-epoch comparison of two metrics.csv files, rows matched by their `epoch` column."""
    rows_a, rows_b = _read_metrics_csv(csv_a), _read_metrics_csv(csv_b)
    out = {"epochs_a": None if rows_a is None else len(rows_a), "epochs_b": None if rows_b is None else len(rows_b),
           "only_a": [], "only_b": [], "columns_only_a": [], "columns_only_b": [],
           "first_difference_epoch": None, "differences": []}
    if rows_a is None or rows_b is None:
        return out
    cols_a = {k for row in rows_a.values() for k in row}
    cols_b = {k for row in rows_b.values() for k in row}
    shared = sorted(k for k in cols_a & cols_b if not TIMING_METRIC.search(k))
    out["differences"] = [
        {"epoch": e, "key": k, "a": rows_a[e].get(k), "b": rows_b[e].get(k)}
        for e in sorted(set(rows_a) & set(rows_b)) for k in shared
        if not _same_value(rows_a[e].get(k), rows_b[e].get(k))
    ]
    out.update(only_a=sorted(set(rows_a) - set(rows_b)), only_b=sorted(set(rows_b) - set(rows_a)),
               columns_only_a=sorted(cols_a - cols_b), columns_only_b=sorted(cols_b - cols_a))
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


def _read_metrics_csv(path: Path) -> Optional[Dict[int, Dict[str, Any]]]:
    """{epoch: {column: value}}; None when the file is absent. Rows without `epoch` are numbered from 1."""
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        rows = [{k: _parse(v) for k, v in row.items() if k is not None} for row in csv.DictReader(f)]
    by_epoch = {}
    for i, row in enumerate(rows, 1):
        epoch = row.pop("epoch", i)
        by_epoch[int(epoch) if isinstance(epoch, int) or isinstance(epoch, float) and epoch.is_integer() else i] = row
    return by_epoch


def _parse(text: Optional[str]) -> Any:
    if text is None or text == "":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same_value(a: Any, b: Any) -> bool:
    """Exact equality, with 1 == 1.0 and NaN == NaN (a metric that was NaN in both runs did not change)."""
    if _is_number(a) and _is_number(b):
        return a == b or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


def to_json(diff: Dict[str, Any]) -> str:
    return json.dumps(diff, indent=2, default=str)
