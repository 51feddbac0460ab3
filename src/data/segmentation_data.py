"""Segmentation datasets: `images/` and `masks/` folders with matching names; a mask is a single-channel 8-bit PNG
of class ids, with an ignore index (255 by default).

Cityscapes works as is: `<name>_leftImg8bit.png` images pair with `<name>_gtFine_labelTrainIds.png` masks (the
other gtFine files beside them are skipped), in city subfolders or flat.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from src.common.errors import UserError
from src.common.image_files import PILLOW_IMAGE_SUFFIXES, is_image
from src.data.data_yaml import parse_class_names, read_dataset_yaml

_CITYSCAPES_MASK = "_gtFine_labelTrainIds"
_CITYSCAPES_IMAGE = "_leftImg8bit"
_MASK_MODES = ("L", "P")  # 8-bit single channel; a palette image stores class ids as its indices


@dataclass(frozen=True)
class SegmentationSplit:
    role: str  # "train" / "val" / "test", for messages
    root: Path  # absolute folder holding images/ and masks/
    images: tuple[Path, ...]
    masks: tuple[Path, ...]  # masks[i] belongs to images[i]


def _files(folder: Path, suffixes) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root, f) for f in files if not f.startswith(".") and is_image(f, suffixes)]
    return sorted(found)


def _key(path: Path, folder: Path, marker: str) -> str:
    rel = path.relative_to(folder).with_suffix("")
    name = rel.name[: -len(marker)] if rel.name.endswith(marker) else rel.name
    return str(rel.parent / name)


def _example(keys) -> str:
    return ", ".join(sorted(keys)[:3])


def resolve_segmentation_split(directory, role: str) -> SegmentationSplit:
    """Pair every image in `directory/images` with the mask of the same name in `directory/masks`."""
    if not directory or not str(directory).strip():
        raise UserError(f"{role} data: no path given; pass a folder holding images/ and masks/")
    root = Path(directory).expanduser()
    if not root.exists():
        raise UserError(f"{role} data {directory} does not exist; check the path")
    root = root.resolve()
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            raise UserError(f"{role} data {directory} has no {sub}/ folder; a segmentation split is a folder holding "
                            "images/ and masks/ (one single-channel PNG of class ids per image, same name)")
    images = _files(root / "images", PILLOW_IMAGE_SUFFIXES)
    masks = _files(root / "masks", PILLOW_IMAGE_SUFFIXES)
    if not images:
        raise UserError(f"{role} data {directory}: no images in {root / 'images'}")
    jpeg_masks = [m for m in masks if m.suffix.lower() in (".jpg", ".jpeg")]
    if jpeg_masks:
        raise UserError(f"{role} data {directory}: mask {jpeg_masks[0]} is a JPEG, whose compression changes class "
                        "ids; save masks as PNG")
    if any(m.stem.endswith(_CITYSCAPES_MASK) for m in masks):  # Cityscapes: keep only the train-id masks
        masks = [m for m in masks if m.stem.endswith(_CITYSCAPES_MASK)]
    image_by_key = {_key(p, root / "images", _CITYSCAPES_IMAGE): p for p in images}
    mask_by_key = {_key(p, root / "masks", _CITYSCAPES_MASK): p for p in masks}
    no_mask = image_by_key.keys() - mask_by_key.keys()
    no_image = mask_by_key.keys() - image_by_key.keys()
    if no_mask or no_image or len(image_by_key) != len(images) or len(mask_by_key) != len(masks):
        raise UserError(f"{role} data {directory}: {len(images)} images and {len(masks)} masks do not pair up by "
                        f"name (images without a mask: {len(no_mask)}, e.g. {_example(no_mask) or '-'}; masks "
                        f"without an image: {len(no_image)}, e.g. {_example(no_image) or '-'}); give every image "
                        "exactly one mask with the same name")
    keys = sorted(image_by_key)
    return SegmentationSplit(role, root, tuple(image_by_key[k] for k in keys), tuple(mask_by_key[k] for k in keys))


def load_segmentation_yaml(path) -> tuple[list[str], int]:
    """`(class names, ignore_index)` from a dataset yaml; ignore_index defaults to 255."""
    data = read_dataset_yaml(path)
    names = parse_class_names(data, path)
    ignore = data.get("ignore_index", 255)
    if isinstance(ignore, bool) or not isinstance(ignore, int) or not 0 <= ignore <= 255:
        raise UserError(f"data yaml {path}: ignore_index must be an integer from 0 to 255, got {ignore!r}")
    if ignore < len(names):
        raise UserError(f"data yaml {path}: ignore_index {ignore} is also a class id (0..{len(names) - 1}); "
                        "use a value above the class ids, e.g. 255")
    return names, ignore


def _check_pair(image_path: Path, mask_path: Path, num_classes: int, ignore_index: int):
    """Return `(problem or None, per-value pixel counts or None)` for one image/mask pair."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image_path) as image:
            image_size = image.size
        with Image.open(mask_path) as mask:
            if mask.mode not in _MASK_MODES:
                return (f"mask {mask_path} has mode {mask.mode} ({len(mask.getbands())} channel(s)); masks must be "
                        "single-channel 8-bit PNGs of class ids (convert colour masks to class ids)"), None
            if mask.size != image_size:
                return (f"mask {mask_path} is {mask.size[0]}x{mask.size[1]} but its image {image_path.name} is "
                        f"{image_size[0]}x{image_size[1]}; masks must match their image's size"), None
            values = np.asarray(mask)
    except (OSError, UnidentifiedImageError) as exc:
        return f"cannot read {image_path} / {mask_path}: {exc.__class__.__name__}: {exc}", None
    counts = np.bincount(values.ravel(), minlength=256)
    bad = [v for v in np.flatnonzero(counts[num_classes:]) + num_classes if v != ignore_index]
    if bad:
        shown = ", ".join(str(int(v)) for v in bad[:5])
        return (f"mask {mask_path} has value(s) {shown} outside the class ids 0..{num_classes - 1} and the ignore "
                f"index {ignore_index}; fix the mask or the data yaml's names"), None
    return None, counts


def validate_segmentation_split(split: SegmentationSplit, num_classes: int, ignore_index: int = 255) -> dict:
    """Check every pair (sizes, mask mode, mask values); return `{images, pixels_per_class, ignored_pixels}`."""
    import numpy as np

    total = np.zeros(256, dtype=np.int64)
    for image_path, mask_path in zip(split.images, split.masks):
        problem, counts = _check_pair(image_path, mask_path, num_classes, ignore_index)
        if problem:
            raise UserError(f"{split.role} data {split.root}: {problem}")
        total += counts
    return {"images": len(split.images), "pixels_per_class": [int(c) for c in total[:num_classes]],
            "ignored_pixels": int(total[ignore_index])}
