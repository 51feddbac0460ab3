"""Training curves: one PNG per run, drawn from metrics.csv rows."""

import math
from pathlib import Path
from typing import Any, Dict, List

from src.common.atomic import atomic_write_with
from src.common.dictdiff import is_number


def _panel_of(key: str) -> str:
    if "loss" in key:
        return "losses"
    if key.startswith("lr"):
        return "learning rate"
    if "IoU_" in key:
        return "per-class IoU"
    if key.startswith("val/") or key == "fitness":
        return "validation metrics"
    return "other"


def curve_labels(rows: List[Dict[str, Any]]) -> List[str]:
    """The curves plot_curves draws, each labelled with its metrics.csv column name."""
    keys: List[str] = []
    for row in rows:
        keys += [k for k in row if k != "epoch" and k not in keys and is_number(row[k])]
    return keys


def plot_curves(rows: List[Dict[str, Any]], out_path: Path) -> Path:
    """Metrics against epoch, a few panels of related curves (losses, validation metrics, lr, ...).

    Metrics are the union over all rows (validation may start later than training loss); empty or
    non-numeric cells are skipped, not fatal. Few panels and no layout solver keep this well under a second.
    """
    # A bare Figure renders with Agg without pyplot, so the caller's matplotlib backend is never changed.
    from matplotlib.figure import Figure

    keys = curve_labels(rows)
    panels: Dict[str, List[str]] = {}
    for key in keys:
        panels.setdefault(_panel_of(key), []).append(key)
    cols = max(1, min(3, len(panels)))
    nrows = max(1, math.ceil(len(panels) / cols))
    fig = Figure(figsize=(4.2 * cols, 3.0 * nrows))
    fig.subplots_adjust(left=0.07, right=0.98, top=0.92, bottom=0.08, wspace=0.25, hspace=0.45)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, (title, members) in zip(axes.flat, panels.items()):
        for key in members:
            points = [(r["epoch"], r[key]) for r in rows if is_number(r.get(key))]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=2, label=key)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="best")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    atomic_write_with(out_path, lambda f: fig.savefig(f, format="png", dpi=80), "wb")
    return Path(out_path)
