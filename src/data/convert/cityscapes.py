"""Cityscapes fine annotations: `SRC/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png` with
`SRC/gtFine/<split>/<city>/<name>_gtFine_labelIds.png` (the other gtFine files are not used).

The label table (name, id, trainId) comes from the `cityscapesscripts` package, not retyped here. The `cityscapes`
subtask keeps the 19 standard training classes (trainId order; spaces in names become `_`), and
`road_scene_segmentation` folds Cityscapes onto our eight classes with ROAD_SCENE_MAP. A label that maps to
nothing becomes the ignore index.
"""

import os
from pathlib import Path

from src.common.errors import UserError
from src.data.convert.common import SegmentationSample, Source, check_pairs, check_unique_stems, require_folder

FAMILY = "segmentation"
SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_leftImg8bit.png"
MASK_SUFFIX = "_gtFine_labelIds.png"
# Cityscapes label -> road_scene_segmentation class. Everything else is ignored: the void labels, parking and rail
# track (not road), wall, fence, guard rail, bridge, tunnel (not buildings), pole, polegroup, traffic light.
ROAD_SCENE_MAP = {
    "road": "road",
    "sidewalk": "sidewalk",
    "building": "building",
    "vegetation": "vegetation",
    "terrain": "vegetation",  # grass and soil: Cityscapes' "nature" category, with vegetation
    "sky": "sky",
    "car": "vehicle", "truck": "vehicle", "bus": "vehicle", "caravan": "vehicle", "trailer": "vehicle",
    "train": "vehicle", "motorcycle": "vehicle", "bicycle": "vehicle",
    "person": "person", "rider": "person",
    "traffic sign": "traffic_sign",
}


def labels() -> list:
    """Cityscapes labels that appear in labelIds masks (id >= 0), from cityscapesscripts' own table."""
    from cityscapesscripts.helpers.labels import labels as table  # the module has no GUI or heavy imports

    return [label for label in table if label.id >= 0]


def class_name(label) -> str:
    return label.name.replace(" ", "_")


def train_classes() -> list[str]:
    """The 19 standard classes in trainId order: the `cityscapes` subtask's classes."""
    trained = sorted((label.trainId, class_name(label)) for label in labels() if 0 <= label.trainId < 255)
    return [name for _, name in trained]


def default_map(subtask: str) -> dict | None:
    if subtask == "cityscapes":
        return {label.name: class_name(label) if 0 <= label.trainId < 255 else None for label in labels()}
    if subtask == "road_scene_segmentation":
        return {label.name: ROAD_SCENE_MAP.get(label.name) for label in labels()}
    return None


def source_classes() -> list[str]:
    return [label.name for label in labels()]


def table_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"cityscapesscripts {version('cityscapesscripts')}"
    except PackageNotFoundError:
        return "cityscapesscripts (version unknown)"


def lookup_table(mapping: dict, class_ids: dict, ignore_index: int):
    """(lut, valid): lut[label id] = our class id or `ignore_index`; valid[v] says v is a Cityscapes label id."""
    import numpy as np

    lut = np.full(256, ignore_index, dtype=np.uint8)
    valid = np.zeros(256, dtype=bool)
    for label in labels():
        target = mapping.get(label.name)
        lut[label.id] = class_ids[target] if target is not None else ignore_index
        valid[label.id] = True
    return lut, valid


def read(src: Path, images: Path | None, split: str | None) -> Source:
    """Every `*_leftImg8bit.png` of the split with its `*_gtFine_labelIds.png`."""
    if split not in SPLITS:
        got = "" if split is None else f", got {split!r}"
        raise UserError(f"cityscapes needs --split {'|'.join(SPLITS)}{got}")
    if not src.exists():
        raise UserError(f"Cityscapes root {src} does not exist; pass the folder holding leftImg8bit/ and gtFine/")
    if not (src / "leftImg8bit").is_dir() or not (src / "gtFine").is_dir():
        raise UserError(f"{src} is not a Cityscapes root: it needs leftImg8bit/ and gtFine/ (from "
                        "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip)")
    hint = "the Cityscapes root must hold leftImg8bit/<split>/<city>/ and gtFine/<split>/<city>/"
    image_root = require_folder(src / "leftImg8bit" / split, "Cityscapes split folder", hint)
    mask_root = require_folder(src / "gtFine" / split, "Cityscapes split folder", hint)
    images_by_stem = _files(image_root, IMAGE_SUFFIX)
    masks_by_stem = _files(mask_root, MASK_SUFFIX)
    check_pairs(set(images_by_stem), set(masks_by_stem), f"Cityscapes {split} split in {src}", "image",
                "gtFine labelIds mask")
    if not images_by_stem:
        raise UserError(f"Cityscapes {split} split in {src}: no *{IMAGE_SUFFIX} images in {image_root}")
    samples = [SegmentationSample(stem, images_by_stem[stem], masks_by_stem[stem]) for stem in sorted(images_by_stem)]
    record = {"path": str(src.absolute()), "split": split, "label_table": table_version()}
    return Source(samples, record)


def _files(root: Path, suffix: str) -> dict[str, Path]:
    """{name without suffix: path} of the files ending in `suffix` in the city folders under `root`."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder, f) for f in files if f.endswith(suffix) and not f.startswith(".")]
    stems = [p.name[: -len(suffix)] for p in found]
    check_unique_stems(stems, f"Cityscapes folder {root}")
    return dict(zip(stems, found))
