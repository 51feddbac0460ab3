"""Label-id masks to our class-id masks (single-channel PNG, the ignore index for everything unmapped)."""

from pathlib import Path

from src.common.atomic import atomic_write_with
from src.common.errors import UserError

_MASK_MODES = ("L", "P")  # 8-bit single channel; a palette image stores the ids as its indices


def convert_mask(source: Path, image: Path, target: Path, lut, valid):
    """Write `lut[source mask]` to `target`; return the per-value pixel counts (256) of what was written.

    The mask must be single-channel 8-bit, as large as its image, and hold only values `valid` allows."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(image) as im:
            image_size = im.size
        with Image.open(source) as mask:
            if mask.mode not in _MASK_MODES:
                raise UserError(f"mask {source} has mode {mask.mode}; label-id masks are single-channel 8-bit PNGs "
                                "(is it a color or instance-id file?)")
            ids = np.asarray(mask)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for damaged files; each is one clear line
        raise UserError(f"cannot read {image} / {source} ({type(exc).__name__}: {str(exc)[:120]}); replace or "
                        "remove the pair") from None
    if ids.shape[::-1] != image_size:
        raise UserError(f"mask {source} is {ids.shape[1]}x{ids.shape[0]} but its image {image.name} is "
                        f"{image_size[0]}x{image_size[1]}; a mask must match its image")
    present = np.flatnonzero(np.bincount(ids.ravel(), minlength=256))
    unknown = [int(v) for v in present if not valid[v]]
    if unknown:
        raise UserError(f"mask {source} has value(s) {', '.join(map(str, unknown[:5]))} that are not label ids of "
                        "the dataset; pass the labelIds masks (not trainIds, color or instanceIds)")
    out = lut[ids]
    atomic_write_with(target, lambda f: Image.fromarray(out).save(f, format="PNG"))
    return np.bincount(out.ravel(), minlength=256)
