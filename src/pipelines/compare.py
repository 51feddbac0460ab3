"""Did two runs produce the same result? Weights (tensor sha256), the per-epoch metric trace and best metrics.

Used by `reproduce` (original vs re-run) and `check-determinism` (two identical runs). Three verdicts:
`bit-exact` (equal weights, identical traces and best metrics), `within tolerance` (every metric within
`rtol`/`atol`, weights may differ) and `diverged` (a metric beyond tolerance, or epochs missing), naming the first
epoch where the traces part. Timing metrics (time/elapsed/duration/speed) never count.
"""

from pathlib import Path
from typing import Any, Dict, List, Optional

from src.common import run_diff
from src.common.dictdiff import close, same_value
from src.common.run_diff import TIMING_METRIC
from src.common.run_dir import BEST_CHECKPOINT, epoch_checkpoint_name

BIT_EXACT, WITHIN_TOLERANCE, DIVERGED = "bit-exact", "within tolerance", "diverged"
_SHOWN = 20  # differences listed in text form; the JSON report has them all


def read_trace(run_dir: Path) -> Dict[int, Dict[str, Any]]:
    """{epoch: {metric: value}} from metrics.csv, timing columns dropped ({} without one)."""
    return run_diff.read_trace(run_dir) or {}


def compare_traces(original: Dict[int, dict], reproduction: Dict[int, dict], rtol: float, atol: float,
                   upto: Optional[int] = None) -> Dict[str, Any]:
    """Epoch-by-epoch comparison of two traces (only epochs <= `upto` when given), in run_diff's terms."""
    if upto is not None:
        original = {e: r for e, r in original.items() if e <= upto}
        reproduction = {e: r for e, r in reproduction.items() if e <= upto}
    cmp = run_diff.compare_traces(original, reproduction, rtol, atol)
    differences = [{"epoch": d["epoch"], "key": d["key"], "original": d["a"], "reproduction": d["b"],
                    "within_tolerance": d["within_tolerance"]} for d in cmp["differences"]]
    only_o, only_r = cmp["only_a"], cmp["only_b"]
    beyond = [d["epoch"] for d in differences if not d["within_tolerance"]] + only_o + only_r
    return {
        "epochs_original": cmp["epochs_a"], "epochs_reproduction": cmp["epochs_b"],
        "epochs_only_original": only_o, "epochs_only_reproduction": only_r,
        "columns_only_original": cmp["columns_only_a"], "columns_only_reproduction": cmp["columns_only_b"],
        "first_difference_epoch": min([d["epoch"] for d in differences] + only_o + only_r, default=None),
        "first_divergent_epoch": min(beyond, default=None),
        "differences": differences,
    }


def compare_metrics(original: Dict[str, Any], reproduction: Dict[str, Any], rtol: float,
                    atol: float) -> List[Dict[str, Any]]:
    """Best/final metrics that differ (timing metrics skipped); a key missing on one side is a difference."""
    out = []
    for key in sorted(set(original) | set(reproduction)):
        if TIMING_METRIC.search(key):
            continue
        a, b = original.get(key), reproduction.get(key)
        if key not in original or key not in reproduction or not same_value(a, b):
            both = key in original and key in reproduction
            out.append({"key": key, "original": a, "reproduction": b,
                        "within_tolerance": both and close(a, b, rtol, atol)})
    return out


def weight_hash(path: Path) -> str:
    """sha256 of a checkpoint's model_state tensors (file bytes differ run to run; tensors must not)."""
    from src.common.checkpoint import load_checkpoint, state_dict_sha256

    return state_dict_sha256(load_checkpoint(path)["model_state"])


def compare_weights(original_dir: Path, reproduction_dir: Path, epochs: int, include_best: bool) -> Dict[str, Any]:
    """Tensor hashes of every epoch checkpoint (<= `epochs`) present in both runs, plus best_model.pth."""
    names = [epoch_checkpoint_name(e) for e in range(1, epochs + 1)]
    names = [n for n in names if (Path(original_dir) / n).is_file() and (Path(reproduction_dir) / n).is_file()]
    if include_best:
        names.append(BEST_CHECKPOINT)
    compared, first = [], None
    for name in names:
        a, b = Path(original_dir) / name, Path(reproduction_dir) / name
        record = {"checkpoint": name, "original": weight_hash(a) if a.is_file() else None,
                  "reproduction": weight_hash(b) if b.is_file() else None}
        record["equal"] = record["original"] is not None and record["original"] == record["reproduction"]
        if not record["equal"] and first is None and name != BEST_CHECKPOINT:
            first = int(name.rsplit("_", 1)[1].split(".")[0])
        compared.append(record)
    final = epoch_checkpoint_name(epochs)
    return {"compared": compared, "equal": bool(compared) and all(r["equal"] for r in compared),
            "final_checkpoint": final if final in names else None, "first_difference_epoch": first}


def verdict(weights: Dict[str, Any], trace: Dict[str, Any], best: Optional[List[Dict[str, Any]]]) -> str:
    best = best or []
    if trace["first_divergent_epoch"] is not None or not all(d["within_tolerance"] for d in best):
        return DIVERGED
    identical_trace = not (trace["differences"] or trace["columns_only_original"]
                           or trace["columns_only_reproduction"])
    if weights["equal"] and identical_trace and not best:
        return BIT_EXACT
    return WITHIN_TOLERANCE


def compare_runs(original_dir: Path, reproduction_dir: Path, rtol: float, atol: float,
                 epochs: Optional[int] = None, best_original: Optional[dict] = None,
                 best_reproduction: Optional[dict] = None) -> Dict[str, Any]:
    """Full comparison. `epochs`: compare only the first K epochs (best metrics are then not compared);
    otherwise all epochs of the original, its best_model.pth and the given best metrics."""
    trace_o, trace_r = read_trace(original_dir), read_trace(reproduction_dir)
    partial = epochs is not None
    upto = epochs if partial else max(trace_o, default=0)
    trace = compare_traces(trace_o, trace_r, rtol, atol, upto=upto)
    weights = compare_weights(original_dir, reproduction_dir, upto, include_best=not partial)
    best = None if partial else compare_metrics(best_original or {}, best_reproduction or {}, rtol, atol)
    result = verdict(weights, trace, best)
    return {"verdict": result, "first_divergent_epoch": trace["first_divergent_epoch"], "epochs": upto,
            "partial": partial, "rtol": rtol, "atol": atol, "weights": weights, "trace": trace,
            "best_metrics": best}


def format_comparison(cmp: Dict[str, Any]) -> List[str]:
    """Text lines: weights, trace and best-metric differences, then the verdict."""
    lines = []
    for w in cmp["weights"]["compared"]:
        state = "equal" if w["equal"] else f"{str(w['original'])[:12]} -> {str(w['reproduction'])[:12]}"
        lines.append(f"weights {w['checkpoint']}: {state}")
    trace = cmp["trace"]
    for key in ("epochs_only_original", "epochs_only_reproduction", "columns_only_original",
                "columns_only_reproduction"):
        if trace[key]:
            lines.append(f"{key.replace('_', ' ')}: {', '.join(map(str, trace[key]))}")
    for d in trace["differences"][:_SHOWN]:
        mark = "" if d["within_tolerance"] else "  (beyond tolerance)"
        lines.append(f"epoch {d['epoch']} {d['key']}: {d['original']} -> {d['reproduction']}{mark}")
    if len(trace["differences"]) > _SHOWN:
        lines.append(f"... and {len(trace['differences']) - _SHOWN} more trace differences (see --json)")
    for d in cmp["best_metrics"] or []:
        mark = "" if d["within_tolerance"] else "  (beyond tolerance)"
        lines.append(f"best {d['key']}: {d['original']} -> {d['reproduction']}{mark}")
    if cmp["best_metrics"] is None:
        lines.append(f"best metrics: not compared (only the first {cmp['epochs']} epochs were re-run)")
    lines.append("verdict: " + describe_verdict(cmp))
    return lines


def describe_verdict(cmp: Dict[str, Any]) -> str:
    if cmp["verdict"] == DIVERGED:
        where = cmp["first_divergent_epoch"]
        return f"{DIVERGED} at epoch {where}" if where is not None else f"{DIVERGED} (best metrics differ)"
    if cmp["verdict"] == WITHIN_TOLERANCE:
        return f"{WITHIN_TOLERANCE} (rtol {cmp['rtol']:g}, atol {cmp['atol']:g})"
    return BIT_EXACT
