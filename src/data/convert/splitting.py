"""Deterministic train/val split: an image's side depends only on its file name and the seed.

Every name gets a sha256 key of (seed, name); the `round(n * fraction)` names with the smallest keys go to val.
Listing order, the number of CPU cores or the platform cannot change the result, and the same seed over the same
names always gives the same split.
"""

import hashlib

from src.common.errors import UserError


def _key(seed: int, name: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{name}".encode("utf-8")).digest()


def assign_splits(names: list[str], val_fraction: float | None, seed: int) -> dict[str, str | None]:
    """{name: "train" | "val"}, or {name: None} (one flat folder) when `val_fraction` is None."""
    if val_fraction is None:
        return dict.fromkeys(names)
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    n_val = round(len(names) * val_fraction)
    if n_val < 1 or n_val >= len(names):
        raise UserError(f"--val-fraction {val_fraction} of {len(names)} image(s) leaves "
                        f"{'no validation' if n_val < 1 else 'no training'} image; use a fraction that puts at "
                        "least one image on each side, or leave --val-fraction out")
    val = set(sorted(names, key=lambda name: _key(seed, name))[:n_val])
    return {name: "val" if name in val else "train" for name in names}
