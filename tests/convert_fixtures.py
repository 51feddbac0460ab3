"""Tiny datasets in the official KITTI, BDD100K, COCO and Cityscapes layouts, for the `convert` tests."""

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

KITTI_SIZE = (96, 64)  # width, height


def _image(path: Path, size, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size[1], size[0], 3), (shade, 90, 160 - shade // 2), dtype=np.uint8)
    pixels[size[1] // 3:, :, 1] = 40  # a road below a sky, so images differ by more than one colour
    fmt = "JPEG" if path.suffix == ".jpg" else "PNG"
    Image.fromarray(pixels).save(path, format=fmt)


def kitti_line(cls: str, x1, y1, x2, y2) -> str:
    """A KITTI label line: all 15 fields, the 2D box in fields 5-8."""
    return f"{cls} 0.00 0 -1.57 {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} 1.52 1.63 3.88 -0.62 1.77 12.10 -1.61\n"


# Per image: every class KITTI has, a box reaching outside the image (clipped), one of zero width and one wholly
# outside (both degenerate), and the DontCare regions KITTI marks.
KITTI_LINES = [
    kitti_line("Car", 10, 12, 40.5, 30),
    kitti_line("Van", -5, 20, 30, 70),  # clipped to 0, 20, 30, 64
    kitti_line("Truck", 80, 10, 120, 40),  # clipped to 80, 10, 96, 40
    kitti_line("Pedestrian", 50, 5, 60, 40),
    kitti_line("Person_sitting", 62, 30, 70, 44),
    kitti_line("Cyclist", 60, 10, 70, 50),
    kitti_line("Tram", 0, 0, 50, 30),
    kitti_line("Misc", 5, 5, 15, 15),
    kitti_line("Car", 20, 20, 20, 40),  # zero width: degenerate
    kitti_line("Car", 200, 10, 250, 40),  # wholly outside: degenerate once clipped
    "DontCare -1 -1 -10 1.00 1.00 5.00 5.00 -1 -1 -1 -1000 -1000 -1000 -10\n",
]


def make_kitti(root: Path, n: int = 5, size=KITTI_SIZE) -> Path:
    """root/image_2/00000N.png + root/label_2/00000N.txt; the last image has an empty label file."""
    for i in range(n):
        _image(root / "image_2" / f"{i:06d}.png", size, 30 * i % 250)
        label = root / "label_2" / f"{i:06d}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("" if i == n - 1 else "".join(KITTI_LINES))
    return root


def make_bdd(root: Path) -> tuple[Path, Path]:
    """(label JSON, image folder): 2018 and 2020 category names, lane / drivable area labels without box2d."""
    images = root / "images"
    names = ["b1c66a42-6f7d68ca.jpg", "b1c81faa-3df17267.jpg", "b1d0a191-06deb55d.jpg"]
    for i, name in enumerate(names):
        _image(images / name, (128, 72), 60 * i)

    def box(category, x1, y1, x2, y2, **extra):
        return {"category": category, "attributes": {"occluded": False}, "manualShape": True,
                "box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}, "id": extra.get("id", 0)}

    frames = [
        {"name": names[0], "attributes": {"weather": "clear"}, "timestamp": 10000, "labels": [
            box("car", 10, 20, 50, 50), box("motor", 60, 30, 80, 60), box("bike", 90, 30, 110, 60),
            box("person", 5, 10, 15, 40), box("rider", 100, 5, 127.5, 45), box("traffic sign", 1, 1, 9, 9),
            {"category": "lane", "attributes": {"laneDirection": "parallel"}, "poly2d": [[[0, 60], [128, 60]]]},
            {"category": "drivable area", "poly2d": [[[0, 50], [128, 50], [128, 72]]]}]},
        {"name": names[1], "labels": [box("truck", -10, 5, 60, 80), box("bus", 70, 10, 120, 60),
                                       box("pedestrian", 30, 30, 30.5, 60),  # under a pixel wide
                                       box("motorcycle", 5, 5, 25, 25), box("bicycle", 30, 5, 50, 25)]},
        {"name": names[2]},  # a frame without objects has no "labels" key
    ]
    label_file = root / "labels" / "det_val.json"
    label_file.parent.mkdir(parents=True, exist_ok=True)
    label_file.write_text(json.dumps(frames))
    return label_file, images


def make_coco(root: Path) -> tuple[Path, Path]:
    """(instances JSON, image folder): non-contiguous category ids, a crowd annotation, an image without objects."""
    images = root / "val2017"
    entries = [{"id": 139, "file_name": "000000000139.jpg", "width": 120, "height": 80},
               {"id": 285, "file_name": "000000000285.jpg", "width": 100, "height": 100},
               {"id": 632, "file_name": "000000000632.jpg", "width": 64, "height": 48}]
    for i, entry in enumerate(entries):
        _image(images / entry["file_name"], (entry["width"], entry["height"]), 70 * i)
    categories = [{"supercategory": "person", "id": 1, "name": "person"},
                  {"supercategory": "vehicle", "id": 3, "name": "car"},
                  {"supercategory": "vehicle", "id": 8, "name": "truck"},
                  {"supercategory": "outdoor", "id": 13, "name": "stop sign"},
                  {"supercategory": "indoor", "id": 90, "name": "toothbrush"}]
    annotations = [
        {"id": 1, "image_id": 139, "category_id": 3, "bbox": [10.0, 20.0, 30.0, 15.0], "area": 450, "iscrowd": 0},
        {"id": 2, "image_id": 139, "category_id": 1, "bbox": [60, 10, 20, 50], "area": 1000, "iscrowd": 0},
        {"id": 3, "image_id": 139, "category_id": 1, "bbox": [0, 0, 100, 80], "area": 8000, "iscrowd": 1,
         "segmentation": {"counts": [0, 8000], "size": [80, 120]}},
        {"id": 4, "image_id": 139, "category_id": 90, "bbox": [5, 5, 4, 4], "area": 16, "iscrowd": 0},
        {"id": 5, "image_id": 285, "category_id": 8, "bbox": [70, 60, 50, 50], "area": 2500, "iscrowd": 0},
        {"id": 6, "image_id": 285, "category_id": 13, "bbox": [20, 20, 10, 10], "area": 100, "iscrowd": 0},
    ]
    data = {"info": {"description": "tiny"}, "licenses": [], "images": entries, "annotations": annotations,
            "categories": categories}
    label_file = root / "annotations" / "instances_val2017.json"
    label_file.parent.mkdir(parents=True, exist_ok=True)
    label_file.write_text(json.dumps(data))
    return label_file, images


# Cityscapes label ids used in the fixture masks: unlabeled 0, ego vehicle 1, static 4, road 7, sidewalk 8,
# parking 9, building 11, wall 12, pole 17, traffic light 19, traffic sign 20, vegetation 21, terrain 22, sky 23,
# person 24, rider 25, car 26, caravan 29, bicycle 33.
CITYSCAPES_IDS = (0, 1, 4, 7, 8, 9, 11, 12, 17, 19, 20, 21, 22, 23, 24, 25, 26, 29, 33)
CITYSCAPES_FRAMES = (("aachen", "aachen_000000_000019"), ("aachen", "aachen_000001_000019"),
                     ("bremen", "bremen_000000_000019"))


def cityscapes_mask(index: int, size=(64, 32)) -> np.ndarray:
    """Stripes of every id in CITYSCAPES_IDS, shifted per frame."""
    ids = np.array(CITYSCAPES_IDS, dtype=np.uint8)
    columns = (np.arange(size[0]) + index) % len(ids)
    return np.tile(ids[columns], (size[1], 1))


def make_cityscapes(root: Path, split: str = "train", size=(64, 32)) -> Path:
    """root/leftImg8bit/<split>/<city>/*_leftImg8bit.png and root/gtFine/<split>/<city>/*_gtFine_*.png."""
    for i, (city, name) in enumerate(CITYSCAPES_FRAMES):
        _image(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", size, 50 * i)
        gt = root / "gtFine" / split / city
        gt.mkdir(parents=True, exist_ok=True)
        Image.fromarray(cityscapes_mask(i, size)).save(gt / f"{name}_gtFine_labelIds.png")
        # The other gtFine files sit beside it and must not be taken for masks.
        Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(gt / f"{name}_gtFine_color.png")
        Image.fromarray(np.zeros((size[1], size[0]), np.uint16)).save(gt / f"{name}_gtFine_instanceIds.png")
        (gt / f"{name}_gtFine_polygons.json").write_text('{"imgHeight": 32, "imgWidth": 64, "objects": []}')
    return root


def tree_digest(root: Path, mtimes: bool = True) -> str:
    """Names and bytes (and modification times) of every file under root: proof that a source was not modified,
    or that two conversions wrote the same files."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stamp = path.stat().st_mtime_ns if mtimes else ""
        h.update(f"{path.relative_to(root)}\0{stamp}\0".encode() + path.read_bytes())
    return h.hexdigest()


def leftovers(parent: Path) -> list[str]:
    """Hidden build folders left in `parent`."""
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name)
