"""Deterministic synthetic street scenes for detection (YOLO layout) and segmentation (images + masks).

Every image gets its own random stream seeded by (seed, task, split, index), so a seed always gives byte-identical
files and one image never depends on how many others were drawn. A dataset is built in a hidden folder beside
`out_dir` and renamed into place at the end: a crash never leaves half a dataset behind. The hidden folder's
name carries its builder's pid and host (`.<name>.partial-<pid>@<host>-<random>`), so that a build killed with
SIGKILL (which runs no cleanup) is removed by the next build into the same folder once that process is gone.
"""

import os
import re
import secrets
import shutil
import socket
import zlib
from pathlib import Path

from src.common.atomic import atomic_write_text, atomic_write_with
from src.common.errors import UserError
from src.common.report import warn
from src.data import scene, shapes

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")
BACKGROUND_RATE = 0.08  # share of detection images with no object at all
_PARTIAL = re.compile(r"\.(?P<name>.+)\.partial-(?P<pid>[0-9]{1,10})@(?P<host>[A-Za-z0-9._-]+)-[0-9a-f]{8}")


def _spec(builder, height, aspect, stands_on, mirror=True, seg_class=None):
    return {"builder": builder, "height": height, "aspect": aspect, "stands_on": stands_on, "mirror": mirror,
            "seg_class": seg_class}


# Class order is the class id order of configs/datasets/<task>.yaml. Heights are fractions of the image height.
DETECTION_TASKS = {
    "vehicle_detection": {
        "car": _spec(shapes.car, (0.09, 0.15), (2.0, 2.5), "road"),
        "truck": _spec(shapes.truck, (0.17, 0.28), (1.5, 1.9), "road"),
        "bus": _spec(shapes.bus, (0.15, 0.23), (2.3, 2.8), "road"),
        "motorcycle": _spec(shapes.motorcycle, (0.10, 0.16), (1.4, 1.7), "road"),
        "bicycle": _spec(shapes.bicycle, (0.10, 0.15), (1.5, 1.8), "road"),
    },
    "pedestrian_detection": {
        "pedestrian": _spec(shapes.pedestrian, (0.22, 0.40), (0.38, 0.48), "street"),
        "cyclist": _spec(shapes.cyclist, (0.22, 0.36), (1.0, 1.25), "road"),
    },
    "traffic_sign_detection": {
        "stop": _spec(shapes.stop, (0.10, 0.20), (1.0, 1.0), "pole", mirror=False),
        "yield": _spec(shapes.yield_sign, (0.10, 0.20), (1.05, 1.15), "pole", mirror=False),
        "speed_limit": _spec(shapes.speed_limit, (0.10, 0.20), (1.0, 1.0), "pole", mirror=False),
        "no_entry": _spec(shapes.no_entry, (0.10, 0.20), (1.0, 1.0), "pole", mirror=False),
        "pedestrian_crossing": _spec(shapes.pedestrian_crossing, (0.10, 0.20), (1.0, 1.0), "pole", mirror=False),
    },
}

SEGMENTATION_TASK = "road_scene_segmentation"
SEGMENTATION_CLASSES = ("road", "sidewalk", "building", "vegetation", "sky", "vehicle", "person", "traffic_sign")
IGNORE_INDEX = 255
_SEG_OBJECTS = {
    "car": _spec(shapes.car, (0.14, 0.24), (2.0, 2.5), "road", seg_class=scene.VEHICLE),
    "truck": _spec(shapes.truck, (0.27, 0.42), (1.5, 1.9), "road", seg_class=scene.VEHICLE),
    "bus": _spec(shapes.bus, (0.24, 0.36), (2.3, 2.8), "road", seg_class=scene.VEHICLE),
    "bicycle": _spec(shapes.bicycle, (0.16, 0.24), (1.5, 1.8), "road", seg_class=scene.VEHICLE),
    "pedestrian": _spec(shapes.pedestrian, (0.3, 0.5), (0.38, 0.48), "street", seg_class=scene.PERSON),
    "sign": _spec(shapes.no_entry, (0.12, 0.2), (1.0, 1.0), "pole", mirror=False, seg_class=scene.TRAFFIC_SIGN),
}
# Solid shapes only: a bicycle's 2-pixel frame would be all edge, hence all ignored.
_IGNORE_EDGES = ("car", "truck", "bus", "pedestrian")
_SIGN_FACES = (shapes.stop, shapes.yield_sign, shapes.speed_limit, shapes.no_entry, shapes.pedestrian_crossing)


# Every object the generator can draw for detection, by class name: a subtask defined in a config can be drawn
# when all its class names are here.
DRAWABLE = {name: spec for specs in DETECTION_TASKS.values() for name, spec in specs.items()}


def detection_specs(task: str, classes=None) -> dict:
    """{class name: drawing spec} in class-id order: the built-in subtask's, or `classes` (from a config)."""
    if classes is None:
        if task not in DETECTION_TASKS:
            raise UserError(f"unknown detection task {task!r}; choose one of {', '.join(DETECTION_TASKS)}, or pass "
                            "--config with a config that defines it")
        return DETECTION_TASKS[task]
    unknown = [c for c in classes if c not in DRAWABLE]
    if unknown or not classes:
        raise UserError(f"no synthetic drawing for class {unknown[0] if unknown else '(none)'!r} of {task}; the "
                        f"generator draws {', '.join(DRAWABLE)}")
    return {c: DRAWABLE[c] for c in classes}


def detection_class_names(task: str) -> list[str]:
    return list(detection_specs(task))


def _image_rng(seed: int, task: str, split: str, index: int):
    import numpy as np

    return np.random.default_rng([seed, zlib.crc32(task.encode()), SPLITS.index(split), index])


def _pole(x0, y0, w, h, ground) -> tuple:
    half = max(1, round(w * 0.04))
    cx = x0 + w // 2
    return ("rect", [(cx - half, y0 + h // 2), (cx + half, ground)], (120, 120, 125), None, 0)


def _object_prims(rng, spec, box, builder=None) -> list:
    x0, y0, w, h = box
    mirror = spec["mirror"] and rng.random() < 0.5
    return shapes.place((builder or spec["builder"])(w, h, rng), x0, y0, w, h, mirror)


def draw_detection_image(rng, task: str, size: int, specs=None):
    """One square scene: `(PIL image, [(class_id, x0, y0, x1, y1), ...])` with exclusive pixel box ends."""
    from PIL import Image, ImageDraw

    specs = specs if specs is not None else DETECTION_TASKS[task]
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    pieces, geometry = scene.street_background(rng, size, size, trees=True)
    shapes.render(draw, [p for _, p in pieces])
    count = 0 if rng.random() < BACKGROUND_RATE else int(rng.integers(1, 7))
    objects = scene.place_objects(rng, specs, count, size, size, geometry, overlap=False)
    ground = geometry["sidewalk_top"] + (geometry["road_top"] - geometry["sidewalk_top"]) // 2
    # Poles first: they are background and must never cover a labelled sign face.
    shapes.render(draw, [_pole(*box, ground) for name, box in objects if specs[name]["stands_on"] == "pole"])
    boxes, names = [], list(specs)
    for name, box in objects:
        prims = _object_prims(rng, specs[name], box)
        shapes.render(draw, prims)
        layer = Image.new("L", (size, size))
        shapes.render(ImageDraw.Draw(layer), prims, 255)
        drawn = layer.getbbox()  # what was really drawn, clipped to the image
        if drawn:
            boxes.append((names.index(name), *drawn))
    return image, boxes


def _label_text(boxes, size: int) -> str:
    lines = [f"{c} {(x0 + x1) / 2 / size:.6f} {(y0 + y1) / 2 / size:.6f} {(x1 - x0) / size:.6f} "
             f"{(y1 - y0) / size:.6f}\n" for c, x0, y0, x1, y1 in boxes]
    return "".join(lines)


def _save_image(path: Path, image, fmt: str) -> None:
    # Full-resolution chroma keeps thin coloured parts (bicycle frames) their colour.
    options = {"quality": 95, "subsampling": 0} if fmt == "JPEG" else {}
    atomic_write_with(path, lambda f: image.save(f, format=fmt, **options))


def _check_args(counts: dict, seed: int) -> None:
    for split, n in counts.items():
        least = 0 if split == "test" else 1
        if not isinstance(n, int) or isinstance(n, bool) or n < least:
            raise UserError(f"number of {split} images must be an integer >= {least}, got {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"seed must be an integer >= 0, got {seed!r}")


def _write_detection_split(root: Path, task: str, split: str, n: int, seed: int, size: int, specs: dict) -> dict:
    names = list(specs)
    per_class, background = dict.fromkeys(names, 0), 0
    (root / split / "images").mkdir(parents=True)
    (root / split / "labels").mkdir()
    for index in range(n):
        image, boxes = draw_detection_image(_image_rng(seed, task, split, index), task, size, specs)
        stem = f"{split}_{index:05d}"
        _save_image(root / split / "images" / f"{stem}.jpg", image, "JPEG")
        atomic_write_text(root / split / "labels" / f"{stem}.txt", _label_text(boxes, size))
        background += not boxes
        for class_id, *_ in boxes:
            per_class[names[class_id]] += 1
    return {"images": n, "background_images": background, "objects": per_class}


def make_detection_dataset(task: str, out_dir, n_train: int, n_val: int, n_test: int, seed: int,
                           image_size: int = 320, classes=None) -> dict:
    """Write `out_dir/{train,val,test}/{images,labels}` (YOLO layout); return counts per class per split.

    `classes` (a config subtask's class list) draws those classes instead of the built-in subtask's."""
    specs = detection_specs(task, classes)
    names = list(specs)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    _check_args(counts, seed)
    if not isinstance(image_size, int) or not 64 <= image_size <= 4096:
        raise UserError(f"image size must be an integer from 64 to 4096, got {image_size!r}")
    summary = {"task": task, "seed": seed, "image_size": image_size, "generator_version": GENERATOR_VERSION,
               "names": names, "splits": {}}

    def build(root: Path) -> dict:
        for split, n in counts.items():
            if n:
                summary["splits"][split] = _write_detection_split(root, task, split, n, seed, image_size, specs)
        return summary

    return _build_into(out_dir, build)


def draw_segmentation_pair(rng, width: int, height: int):
    """One wide scene and its class-id mask (PIL "L"); some object outlines are marked IGNORE_INDEX."""
    from PIL import Image, ImageChops, ImageDraw, ImageFilter

    image, mask = Image.new("RGB", (width, height)), Image.new("L", (width, height), IGNORE_INDEX)
    draw, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    pieces, geometry = scene.street_background(rng, width, height, trees=True)
    for seg_class, piece in pieces:
        shapes.render(draw, [piece])
        shapes.render(draw_mask, [piece], seg_class)
    objects = scene.place_objects(rng, _SEG_OBJECTS, int(rng.integers(2, 9)), width, height, geometry, overlap=True)
    ground = geometry["sidewalk_top"] + (geometry["road_top"] - geometry["sidewalk_top"]) // 2
    objects.sort(key=lambda o: ground if _SEG_OBJECTS[o[0]]["stands_on"] == "pole" else o[1][1] + o[1][3])
    for name, box in objects:  # far (higher up) first, so nearer objects occlude them as in a photo
        spec = _SEG_OBJECTS[name]
        if spec["stands_on"] == "pole":
            face = _SIGN_FACES[int(rng.integers(len(_SIGN_FACES)))]
            prims = [_pole(*box, ground)] + _object_prims(rng, spec, box, face)
        else:
            prims = _object_prims(rng, spec, box)
        shapes.render(draw, prims)
        shapes.render(draw_mask, prims, spec["seg_class"])
        if name in _IGNORE_EDGES and rng.random() < 0.5:
            layer = Image.new("L", (width, height))
            shapes.render(ImageDraw.Draw(layer), prims, 255)
            edge = ImageChops.subtract(layer, layer.filter(ImageFilter.MinFilter(3)))
            mask.paste(IGNORE_INDEX, (0, 0, width, height), edge)
    return image, mask


def _write_segmentation_split(root: Path, split: str, n: int, seed: int, size: tuple) -> dict:
    import numpy as np

    pixels = np.zeros(256, dtype=np.int64)
    (root / split / "images").mkdir(parents=True)
    (root / split / "masks").mkdir()
    for index in range(n):
        image, mask = draw_segmentation_pair(_image_rng(seed, SEGMENTATION_TASK, split, index), *size)
        stem = f"{split}_{index:05d}"
        _save_image(root / split / "images" / f"{stem}.png", image, "PNG")
        _save_image(root / split / "masks" / f"{stem}.png", mask, "PNG")
        pixels += np.bincount(np.asarray(mask).ravel(), minlength=256)
    per_class = {name: int(pixels[i]) for i, name in enumerate(SEGMENTATION_CLASSES)}
    return {"images": n, "pixels": per_class, "ignored_pixels": int(pixels[IGNORE_INDEX])}


def make_segmentation_dataset(out_dir, n_train: int, n_val: int, n_test: int, seed: int,
                              image_size: tuple[int, int] = (256, 128), classes=None, task: str = None) -> dict:
    """Write `out_dir/{train,val,test}/{images,masks}/*.png`; `image_size` is (width, height). The scenes have
    SEGMENTATION_CLASSES; a config subtask (`task`, `classes`) can use them when its classes are the same."""
    if classes is not None and list(classes) != list(SEGMENTATION_CLASSES):
        raise UserError(f"synthetic segmentation scenes have the classes {list(SEGMENTATION_CLASSES)} (mask value = "
                        f"index); {task} has {list(classes)}")
    counts = {"train": n_train, "val": n_val, "test": n_test}
    _check_args(counts, seed)
    try:
        width, height = image_size
        valid = all(type(v) is int for v in (width, height)) and 64 <= width <= 4096 and 32 <= height <= 4096
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise UserError(f"image size must be (width, height) with width 64-4096 and height 32-4096, got {image_size!r}")
    summary = {"task": task or SEGMENTATION_TASK, "seed": seed, "image_size": [width, height],
               "generator_version": GENERATOR_VERSION, "names": list(SEGMENTATION_CLASSES),
               "ignore_index": IGNORE_INDEX, "splits": {}}

    def build(root: Path) -> dict:
        for split, n in counts.items():
            if n:
                summary["splits"][split] = _write_segmentation_split(root, split, n, seed, (width, height))
        return summary

    return _build_into(out_dir, build)


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a folder; choose a new folder for the dataset")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"output folder {out} is not empty; refusing to overwrite it, choose a new or empty folder")


def _build_into(out_dir, build) -> dict:
    """Run `build(tmp_root)` in a hidden folder beside `out_dir`, then rename it to `out_dir`."""
    from src.common.yaml_io import dump_yaml

    out = Path(out_dir).expanduser().absolute()
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale, pid in remove_stale_partials(out.parent):
        warn(f"note: removed {stale}, a partial dataset left by make-dataset process {pid}, which is no longer "
             "running")
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}@{_host()}-{secrets.token_hex(4)}"
    tmp.mkdir()  # plain mkdir (not mkdtemp) so the dataset gets the user's usual permissions
    try:
        summary = build(tmp)
        atomic_write_text(tmp / "dataset_info.yaml", dump_yaml(summary))
        try:
            os.rename(tmp, out)  # replaces `out` only if it is an empty folder
        except OSError as exc:
            raise UserError(f"cannot move the finished dataset to {out}: {exc.strerror}; choose a new folder") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def remove_stale_partials(parent: Path) -> list[tuple[Path, int]]:
    """Remove the hidden build folders in `parent` whose builder, on this host, is no longer running.

    Returns (folder, pid) of each one removed. A folder of another host, of a live process, or in the old
    name format (no pid) is left alone: only a build we can prove dead is ever removed.
    """
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    host, removed = _host(), []
    for name in names:
        match = _PARTIAL.fullmatch(name)
        if not match or match["host"] != host or _process_alive(int(match["pid"])):
            continue
        path = parent / name
        if path.is_symlink() or not path.is_dir():
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append((path, int(match["pid"])))
    return removed


def _host() -> str:
    # Only characters that survive in a file name and in _PARTIAL; the same host always maps to the same text.
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"


def _process_alive(pid: int) -> bool:
    """False only when this host has no process `pid`; every doubt counts as alive."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)  # signal 0: existence check, nothing is sent
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: another user's live process
        return True
    return True
