"""COCO instances JSON (`images`, `annotations`, `categories`) with the images in `--images`.

`bbox` is [x, y, width, height] in pixels; crowd annotations (`iscrowd: 1`, a region of many objects) are skipped
and counted. Category ids need not be contiguous: classes are mapped by category name.
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
                          "bicycle": "bicycle"},
    "pedestrian_detection": {"person": "pedestrian"},
    "traffic_sign_detection": {"stop sign": "stop"},
}


def default_map(subtask: str) -> dict | None:
    return DEFAULT_MAPS.get(subtask)


def source_classes() -> None:
    return None


def _records(data: dict, key: str, fields: dict, src: Path) -> list:
    """data[key] as a list of dicts whose `fields` have the given types; anything else is one UserError."""
    records = data.get(key)
    if not isinstance(records, list):
        raise UserError(f"{src} is not a COCO instances file: '{key}' is missing or not a list")
    for record in records:
        bad = not isinstance(record, dict) or any(
            not isinstance(record.get(f), t) or isinstance(record.get(f), bool) for f, t in fields.items())
        if bad:
            wanted = ", ".join(f"{f} ({t.__name__})" for f, t in fields.items())
            raise UserError(f"{src}: an entry of '{key}' lacks {wanted}: {str(record)[:100]}")
    return records


def read(src: Path, images: Path, split: str | None) -> Source:
    data = read_json(src, "COCO instances file")
    if not isinstance(data, dict):
        raise UserError(f"{src} is not a COCO instances file: expected a JSON object with images, annotations and "
                        "categories (a list is BDD100K's form: use `street-scene convert bdd100k`)")
    categories = {c["id"]: c["name"] for c in _records(data, "categories", {"id": int, "name": str}, src)}
    entries = _records(data, "images", {"id": int, "file_name": str, "width": int, "height": int}, src)
    annotations = _records(data, "annotations", {"image_id": int, "category_id": int}, src)
    require_folder(images, "--images", "pass the folder holding the images the instances file lists")
    by_id = {}
    for entry in entries:
        if entry["id"] in by_id:
            raise UserError(f"{src}: image id {entry['id']} appears twice in 'images'")
        by_id[entry["id"]] = entry
    paths = check_listed_images([e["file_name"] for e in entries], images, IMAGE_SUFFIXES, f"COCO file {src}")
    check_unique_stems([Path(e["file_name"]).stem for e in entries], f"COCO file {src}")
    boxes, crowd = {image_id: [] for image_id in by_id}, 0
    for ann in annotations:
        if ann["image_id"] not in by_id or ann["category_id"] not in categories:
            which = "image_id" if ann["image_id"] not in by_id else "category_id"
            raise UserError(f"{src}: annotation {ann.get('id', '?')} has {which} {ann[which]}, which is not in "
                            f"'{'images' if which == 'image_id' else 'categories'}'")
        if ann.get("iscrowd"):
            crowd += 1
            continue
        boxes[ann["image_id"]].append((categories[ann["category_id"]], *_bbox(ann, src)))
    samples = [_sample(by_id[i], paths[by_id[i]["file_name"]], boxes[i], src) for i in by_id]
    samples.sort(key=lambda s: s.stem)
    record = {"path": str(src.absolute()), "images": str(images.absolute())}
    return Source(samples, record, {"iscrowd": crowd})


def _bbox(ann: dict, src: Path) -> tuple:
    bbox = ann.get("bbox")
    ok = isinstance(bbox, list) and len(bbox) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
    if not ok:
        raise UserError(f"{src}: annotation {ann.get('id', '?')} has bbox {str(bbox)[:60]}; expected [x, y, width, "
                        "height], four finite numbers")
    x, y, w, h = (float(v) for v in bbox)
    return x, y, x + w, y + h


def _sample(entry: dict, path: Path, boxes: list, src: Path) -> DetectionSample:
    size = image_size(path)
    if size != (entry["width"], entry["height"]):
        raise UserError(f"{src}: image {entry['file_name']} is {size[0]}x{size[1]} px, but the instances file "
                        f"says {entry['width']}x{entry['height']}; is --images the folder of these labels?")
    return DetectionSample(Path(entry["file_name"]).stem, path, size, tuple(boxes))
