"""Does an exported model compute what the checkpoint computes? Raw outputs compared on sample images.

The samples are the run's validation images when they are still on disk, else seeded noise images. Each is
preprocessed exactly as predict does; the torch model and the exported runtime then run on the same array.
`max_rel_diff` is the largest absolute difference over the largest absolute torch output (element-wise
relative differences are meaningless next to outputs near zero).
"""

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

MAX_IMAGES = 4
REPEATS = 5  # timed runs per image, after one warm-up
TOLERANCE = 1e-3  # relative: above it the export fails


def sample_images(data_record: Optional[dict], reader: str) -> Tuple[List[Any], str]:
    """(up to MAX_IMAGES RGB arrays, where they came from)."""
    from src.common.image_files import PILLOW_IMAGE_SUFFIXES, is_image
    from src.inference.sources import read_image

    val = (data_record or {}).get("val")
    if val:
        folder = Path(val)
        folder = folder / "images" if (folder / "images").is_dir() else folder
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if is_image(p, PILLOW_IMAGE_SUFFIXES))[:MAX_IMAGES]
            if files:
                return [read_image(p, reader) for p in files], f"validation images {folder}"
    import numpy as np

    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(MAX_IMAGES)], "seeded noise images"


def compare(batches: List[Any], reference: Callable, runtime: Callable) -> Dict[str, Any]:
    """Max abs/rel difference of `runtime` vs `reference` outputs on each batch, and the p50 latency of both."""
    import numpy as np

    max_abs, max_ref = 0.0, 0.0
    ref_ms, run_ms = [], []
    for batch in batches:
        expected, got = reference(batch), runtime(batch)  # warm-up runs, also the compared outputs
        if expected.shape != got.shape:
            raise ValueError(f"output shapes differ: torch {expected.shape}, export {got.shape}")
        max_abs = max(max_abs, float(np.abs(expected - got).max()))
        max_ref = max(max_ref, float(np.abs(expected).max()))
        ref_ms += _timed(reference, batch)
        run_ms += _timed(runtime, batch)
    return {"max_abs_diff": max_abs, "max_rel_diff": max_abs / max(max_ref, 1e-12),
            "torch_p50_ms": float(np.median(ref_ms)), "runtime_p50_ms": float(np.median(run_ms)),
            "images": len(batches)}


def _timed(fn: Callable, batch) -> List[float]:
    out = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn(batch)
        out.append((time.perf_counter() - start) * 1000)
    return out


def table(parity: Dict[str, Any], runtime_name: str) -> str:
    rows = [("runtime", "max abs diff", "max rel diff", "p50 ms"),
            ("torch", "-", "-", f"{parity['torch_p50_ms']:.2f}"),
            (runtime_name, f"{parity['max_abs_diff']:.3g}", f"{parity['max_rel_diff']:.3g}",
             f"{parity['runtime_p50_ms']:.2f}")]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
