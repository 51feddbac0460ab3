"""BDD100K detection labels: a JSON list of frames `{name, labels: [{category, box2d: {x1, y1, x2, y2}}]}` (also
the Scalabel `{frames: [...]}` form), with the images in `--images`.

Labels without `box2d` (lane markings and drivable area in the 2018 release, drawn as polygons) are skipped and
counted. Both the 2018 category names (`person`, `motor`, `bike`) and the 2020 ones are mapped by default.
"""

import math
from pathlib import Path

from src.common.errors import UserError
from src.data.convert.common import (DetectionSample, Source, check_listed_images, check_unique_stems, image_size,
                                     read_json, require_folder)
from src.common.image_files import IMAGE_SUFFIXES

FAMILY = "detection"
DEFAULT_MAPS = {
    "vehicle_detection": {"car": "car", "truck": "truck", "bus": "bus", "motorcycle": "motorcycle",
                          "bicycle": "bicycle", "motor": "motorcycle", "bike": "bicycle"},
    "pedestrian_detection": {"pedestrian": "pedestrian", "person": "pedestrian", "rider": "cyclist"},
}


def default_map(subtask: str) -> dict | None:
    return DEFAULT_MAPS.get(subtask)


def source_classes() -> None:
    return None


def read(src: Path, images: Path, split: str | None) -> Source:
    """Every frame of the label JSON `src`, with its image from `images` and its boxes."""
    what = "BDD100K label file"
    frames = _frames(read_json(src, what), src)
    require_folder(images, "--images", "pass the folder holding the BDD100K images of the same split")
    names = [_frame_name(frame, i, src) for i, frame in enumerate(frames)]
    paths = check_listed_images(names, images, IMAGE_SUFFIXES, f"{what} {src}")
    stems = [Path(name).stem for name in names]
    check_unique_stems(stems, f"{what} {src}")
    no_box2d, samples = 0, []
    for frame, name, stem in zip(frames, names, stems):
        boxes = []
        for label in frame.get("labels") or []:
            box = _box(label, name, src)
            if box is None:
                no_box2d += 1
            else:
                boxes.append(box)
        samples.append(DetectionSample(stem, paths[name], image_size(paths[name]), tuple(boxes)))
    samples.sort(key=lambda s: s.stem)
    record = {"path": str(src.absolute()), "images": str(images.absolute())}
    return Source(samples, record, {"no_box2d": no_box2d})


def _frames(data, src: Path) -> list:
    if isinstance(data, dict) and isinstance(data.get("frames"), list):
        data = data["frames"]  # Scalabel dataset form
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        raise UserError(f"{src} looks like a COCO instances file, not BDD100K labels; use `street-scene convert "
                        "coco`")
    if not isinstance(data, list) or not data:
        raise UserError(f"{src} is not a BDD100K detection label file: expected a non-empty JSON list of frames "
                        "{name, labels: [{category, box2d}]}")
    return data


def _frame_name(frame, index: int, src: Path) -> str:
    name = frame.get("name") if isinstance(frame, dict) else None
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in Path(name).parts:
        raise UserError(f"{src}: frame {index} has no usable 'name' (the image file name, relative to --images), "
                        f"got {name!r}")
    if not isinstance(frame.get("labels") or [], list):
        raise UserError(f"{src}: frame {name!r} has 'labels' that is not a list")
    return name


def _box(label, frame: str, src: Path):
    """(category, x1, y1, x2, y2), or None for a label without a 2D box."""
    if not isinstance(label, dict) or not isinstance(label.get("category"), str):
        raise UserError(f"{src}: frame {frame!r} has a label without a 'category' name: {str(label)[:80]}")
    box = label.get("box2d")
    if box is None:
        return None
    try:
        coords = [float(box[k]) for k in ("x1", "y1", "x2", "y2")]
    except (TypeError, KeyError, ValueError):
        coords = [math.nan]
    if not all(math.isfinite(v) for v in coords):
        raise UserError(f"{src}: frame {frame!r}, {label['category']!r}: box2d {str(box)[:80]} is not four finite "
                        "numbers x1 y1 x2 y2")
    return (label["category"], *coords)
