"""Convert a source dataset into street-scene's layout, top to bottom: check the arguments, build the class
mapping, read the source, split it, write the dataset into a hidden folder, record `conversion.yaml`, rename.

Everything that can be wrong with the input is found before the first file is written, except damaged masks
(read once, while writing); then the hidden folder is removed and nothing is left behind.
"""

import os
from pathlib import Path

from src.common.atomic import atomic_write_text
from src.common.errors import UserError
from src.data.convert import bdd100k, cityscapes, coco, kitti, yolo
from src.data.convert.mapping import load_map_file, resolve_mapping, unused_entries
from src.data.convert.splitting import assign_splits
from src.data.convert.writing import build_into, check_target, place_image, split_dirs

FORMATS = {"kitti": kitti, "bdd100k": bdd100k, "coco": coco, "cityscapes": cityscapes}
TAKES_IMAGES = ("bdd100k", "coco")  # their labels are one JSON file; the images live in a folder of their own
TAKES_SPLIT = ("cityscapes",)  # one root holds every split
DEFAULT_SEED = 42
# conversion.yaml, in this order: where from, what into, how, what came out, by which code.
RECORD_KEYS = ("format", "source", "task", "family", "classes", "ignore_index", "mapping", "map_file",
               "unused_map_entries", "split", "counts", "splits", "images_linked", "images_copied",
               "street_scene_version")


def family_of(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return FORMATS[fmt].FAMILY


def convert(fmt: str, src, subtask: str, classes: list[str], out, *, images=None, split=None, val_fraction=None,
            seed=None, map_file=None, copy=False, ignore_index: int = 255) -> dict:
    """Write `out` (a new or empty folder) in our layout for `subtask` (class id = index in `classes`); return
    the summary that is also written as `out/conversion.yaml`."""
    family_of(fmt)  # a known format
    module = FORMATS[fmt]
    src = Path(src).expanduser()
    images = Path(images).expanduser() if images is not None else None
    _check_arguments(fmt, images, split, val_fraction, seed)
    out = check_target(out)
    for folder in (src, images):
        _check_outside(out, folder)
    overrides = load_map_file(map_file) if map_file is not None else None
    mapping = resolve_mapping(fmt, subtask, classes, module.default_map(subtask), overrides, map_file,
                              module.source_classes())
    source = module.read(src, images, split)
    if not source.samples:
        raise UserError(f"{fmt} source {src} has no images; check SRC and --images")
    seed = DEFAULT_SEED if seed is None else seed
    assignment = assign_splits([s.stem for s in source.samples], val_fraction, seed)
    summary = {"format": fmt, "source": source.record, "task": subtask, "family": module.FAMILY,
               "classes": list(classes), "mapping": mapping,
               "map_file": str(Path(map_file).absolute()) if map_file is not None else None,
               "split": {"val_fraction": val_fraction, "seed": seed} if val_fraction is not None else None}
    if module.FAMILY == "detection":
        writer = _detection_writer(source, mapping, classes, assignment, copy, summary)
        seen = {box[0] for sample in source.samples for box in sample.boxes}
    else:
        writer = _segmentation_writer(module, source, mapping, classes, ignore_index, assignment, copy, summary)
        seen = set(module.source_classes())
    summary["unused_map_entries"] = unused_entries(overrides, seen)
    summary["street_scene_version"] = _version()
    return build_into(out, writer)


def _check_arguments(fmt, images, split, val_fraction, seed) -> None:
    if fmt in TAKES_IMAGES and images is None:
        raise UserError(f"{fmt} needs --images DIR: the folder holding the images its label file lists")
    if fmt not in TAKES_IMAGES and images is not None:
        raise UserError(f"--images is for {' and '.join(TAKES_IMAGES)}; {fmt} finds its images under SRC")
    if fmt not in TAKES_SPLIT and split is not None:
        raise UserError(f"--split is for {', '.join(TAKES_SPLIT)}; pass the {fmt} files of the split you want")
    if seed is not None and val_fraction is None:
        raise UserError("--seed only chooses the train/val split; pass --val-fraction F with it")
    if val_fraction is not None and not 0.0 < val_fraction < 1.0:
        raise UserError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")


def _check_outside(out: Path, folder: Path | None) -> None:
    if folder is None or not folder.is_dir():
        return
    real_out, real_folder = Path(os.path.realpath(out)), Path(os.path.realpath(folder))
    if real_out == real_folder or real_folder in real_out.parents:
        raise UserError(f"--out {out} is inside the source folder {folder}; the source is never modified, choose "
                        "a folder outside it")


def _split_names(assignment: dict) -> list:
    return sorted(set(assignment.values()), key=lambda s: (s is None, s != "train", s or ""))


def _detection_writer(source, mapping, classes, assignment, copy, summary):
    """Label texts and counts now (all checks done), and the function that writes them into the build folder."""
    class_ids = {name: i for i, name in enumerate(classes)}
    tallies = {split: yolo.DetectionTally() for split in _split_names(assignment)}
    labels = {s.stem: yolo.label_text(s, mapping, class_ids, tallies[assignment[s.stem]]) for s in source.samples}
    total = yolo.DetectionTally()
    for tally in tallies.values():
        total.add(tally)
    summary["counts"] = total.as_dict(classes, source.skipped)
    if None not in tallies:
        summary["splits"] = {split: tally.as_dict(classes) for split, tally in tallies.items()}

    def write(root: Path) -> dict:
        linked, folders = 0, {}
        for sample in source.samples:
            split = assignment[sample.stem]
            dirs = folders.get(split) or folders.setdefault(split, split_dirs(root, split, ("images", "labels")))
            linked += place_image(sample.image, dirs["images"] / f"{sample.stem}{sample.image.suffix}", copy)
            atomic_write_text(dirs["labels"] / f"{sample.stem}.txt", labels[sample.stem])
        return _finish(root, summary, linked, len(source.samples))

    return write


def _segmentation_writer(module, source, mapping, classes, ignore_index, assignment, copy, summary):
    import numpy as np

    from src.data.convert.masks import convert_mask

    lut, valid = module.lookup_table(mapping, {name: i for i, name in enumerate(classes)}, ignore_index)
    summary["ignore_index"] = ignore_index

    def counts(n: int, pixels) -> dict:
        return {"images": n, "pixels": {c: int(pixels[i]) for i, c in enumerate(classes)},
                "ignored_pixels": int(pixels[ignore_index])}

    def write(root: Path) -> dict:
        linked, folders, per_split = 0, {}, {}
        for sample in source.samples:
            split = assignment[sample.stem]
            dirs = folders.get(split) or folders.setdefault(split, split_dirs(root, split, ("images", "masks")))
            pixels = convert_mask(sample.mask, sample.image, dirs["masks"] / f"{sample.stem}.png", lut, valid)
            linked += place_image(sample.image, dirs["images"] / f"{sample.stem}{sample.image.suffix}", copy)
            n, total = per_split.get(split, (0, np.zeros(256, dtype=np.int64)))
            per_split[split] = (n + 1, total + pixels)
        summary["counts"] = counts(len(source.samples), sum(total for _, total in per_split.values()))
        if None not in per_split:
            summary["splits"] = {split: counts(*per_split[split]) for split in _split_names(assignment)}
        return _finish(root, summary, linked, len(source.samples))

    return write


def _finish(root: Path, summary: dict, linked: int, n_images: int) -> dict:
    from src.common.yaml_io import dump_yaml

    summary["images_linked"], summary["images_copied"] = linked, n_images - linked
    record = {key: summary[key] for key in RECORD_KEYS if key in summary}
    atomic_write_text(root / "conversion.yaml", dump_yaml(record))
    return record


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("street-scene")
    except PackageNotFoundError:
        return None
