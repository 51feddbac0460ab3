"""Training curves: one PNG per run, drawn from metrics.csv rows."""

from pathlib import Path
from typing import Any, Dict, List

from src.common.atomic import atomic_write_with

CURVES_FILE = "training_curves.png"


def plot_curves(rows: List[Dict[str, Any]], out_path: Path) -> Path:
    """One small panel per numeric metric against epoch."""
    import matplotlib

    matplotlib.use("Agg")  # no display on clusters; never pick an interactive backend
    import matplotlib.pyplot as plt

    keys = [k for k in rows[0] if k != "epoch" and all(isinstance(r.get(k), (int, float)) for r in rows)]
    cols = min(4, max(1, len(keys)))
    nrows = max(1, -(-len(keys) // cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.4 * nrows), squeeze=False)
    epochs = [r["epoch"] for r in rows]
    for ax, key in zip(axes.flat, keys):
        ax.plot(epochs, [r[key] for r in rows], marker="o", markersize=3)
        ax.set_title(key, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    atomic_write_with(out_path, lambda f: fig.savefig(f, format="png", dpi=90), "wb")
    plt.close(fig)
    return Path(out_path)
