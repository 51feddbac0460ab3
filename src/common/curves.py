"""Training curves: one PNG per run, drawn from metrics.csv rows."""

import math
from pathlib import Path
from typing import Any, Dict, List

from src.common.atomic import atomic_write_with

CURVES_FILE = "training_curves.png"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_curves(rows: List[Dict[str, Any]], out_path: Path) -> Path:
    """One small panel per numeric metric against epoch.

    Metrics are the union over all rows (validation may start later than training loss); empty or
    non-numeric cells are skipped, not fatal.
    """
    # A bare Figure renders with Agg without pyplot, so the caller's matplotlib backend is never changed.
    from matplotlib.figure import Figure

    keys: List[str] = []
    for row in rows:
        keys += [k for k in row if k != "epoch" and k not in keys and _is_number(row[k])]
    cols = min(4, max(1, len(keys)))
    nrows = max(1, math.ceil(len(keys) / cols))
    fig = Figure(figsize=(3.2 * cols, 2.4 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, key in zip(axes.flat, keys):
        points = [(r["epoch"], r[key]) for r in rows if _is_number(r.get(key))]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3)
        ax.set_title(key, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    atomic_write_with(out_path, lambda f: fig.savefig(f, format="png", dpi=90), "wb")
    return Path(out_path)
