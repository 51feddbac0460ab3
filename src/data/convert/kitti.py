"""KITTI object detection (2D boxes): `SRC/image_2/*.png` with `SRC/label_2/*.txt` of the same name.

A label line has 15 space-separated fields: type, truncated, occluded, alpha, then the 2D box x1 y1 x2 y2 in
pixels (fields 5-8), then 3D dimensions, location and rotation_y, which 2D detection does not use.
"""

import math
from pathlib import Path

from src.common.errors import UserError
from src.data.convert.common import DetectionSample, Source, check_pairs, image_size, list_images
from src.common.image_files import IMAGE_SUFFIXES

FAMILY = "detection"
FIELDS = 15
# Classes not listed (DontCare, Misc, Tram, and the other subtask's) are dropped and counted.
DEFAULT_MAPS = {
    "vehicle_detection": {"Car": "car", "Van": "car", "Truck": "truck"},
    "pedestrian_detection": {"Pedestrian": "pedestrian", "Person_sitting": "pedestrian", "Cyclist": "cyclist"},
}


def default_map(subtask: str) -> dict | None:
    return DEFAULT_MAPS.get(subtask)


def source_classes() -> None:
    return None  # KITTI-format exports may carry their own class names


def read(src: Path, images: Path | None, split: str | None) -> Source:
    """Every image of `src/image_2` with the boxes of its `src/label_2` file."""
    if not src.exists():
        raise UserError(f"KITTI folder {src} does not exist; pass the object-detection folder holding image_2/ and "
                        "label_2/ (e.g. .../training)")
    image_dir, label_dir = src / "image_2", src / "label_2"
    if not image_dir.is_dir() or not label_dir.is_dir():
        hint = f" (did you mean {src / 'training'}?)" if (src / "training" / "label_2").is_dir() else ""
        raise UserError(f"{src} is not a KITTI object-detection folder: it needs image_2/ and label_2/{hint}")
    listed = list_images(image_dir, IMAGE_SUFFIXES)
    image_paths = {p.stem: p for p in listed}
    label_paths = {p.stem: p for p in sorted(label_dir.glob("*.txt")) if not p.name.startswith(".")}
    if len(image_paths) != len(listed):
        raise UserError(f"{image_dir}: two images share a name with different suffixes; keep one per name")
    check_pairs(set(image_paths), set(label_paths), f"KITTI folder {src}", "image", "label file")
    if not image_paths:
        raise UserError(f"KITTI folder {src}: no images in {image_dir}")
    samples = [DetectionSample(stem, image_paths[stem], image_size(image_paths[stem]),
                               _read_label(label_paths[stem])) for stem in sorted(image_paths)]
    return Source(samples, {"path": str(src.absolute())})


def _read_label(path: Path) -> tuple:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"KITTI label {path} cannot be read ({type(exc).__name__}); replace it") from None
    boxes = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != FIELDS:
            raise UserError(f"KITTI label {path} line {lineno}: {len(fields)} fields, expected {FIELDS} (type "
                            "truncated occluded alpha x1 y1 x2 y2 height width length x y z rotation_y)")
        try:
            coords = [float(v) for v in fields[4:8]]
        except ValueError:
            coords = [math.nan]
        if not all(math.isfinite(v) for v in coords):
            raise UserError(f"KITTI label {path} line {lineno}: the box {' '.join(fields[4:8])!r} (fields 5-8) is "
                            "not four finite numbers")
        boxes.append((fields[0], *coords))
    return tuple(boxes)
