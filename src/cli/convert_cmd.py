"""`street-scene convert`: turn KITTI, BDD100K, COCO or Cityscapes data into street-scene's dataset layout."""

import argparse
import sys
from pathlib import Path

HELP = "convert KITTI, BDD100K, COCO or Cityscapes data into street-scene's layout (YOLO labels or class-id masks)"
# The keys of src.data.convert.converter.FORMATS, spelled out so that --help imports nothing.
FORMATS = ("kitti", "bdd100k", "coco", "cityscapes")
CODE_ROOT = Path(__file__).resolve().parents[2]  # the checkout whose configs/ define the subtasks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=FORMATS, metavar="FORMAT", help=" | ".join(FORMATS))
    parser.add_argument("src", metavar="SRC",
                        help="kitti: the object-detection folder holding image_2/ and label_2/; bdd100k: the "
                             "detection label JSON; coco: the instances JSON; cityscapes: the root holding "
                             "leftImg8bit/ and gtFine/ (never modified)")
    parser.add_argument("--task", required=True, metavar="SUBTASK",
                        help="the subtask whose classes to write (e.g. vehicle_detection, pedestrian_detection, "
                             "traffic_sign_detection, cityscapes, road_scene_segmentation)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="new or empty folder to create (never overwritten); gets images/ + labels/ (detection) "
                             "or images/ + masks/ (segmentation), or train/ and val/ with --val-fraction")
    parser.add_argument("--images", metavar="DIR", help="bdd100k, coco: the folder holding the labelled images")
    parser.add_argument("--split", choices=("train", "val", "test"), help="cityscapes: which split to convert")
    parser.add_argument("--val-fraction", type=float, metavar="F",
                        help="put this share of the images into DIR/val (chosen by file name and --seed), the rest "
                             "into DIR/train")
    parser.add_argument("--seed", type=int, metavar="N", help="seed of the train/val split (default 42)")
    parser.add_argument("--map", metavar="MAP.yaml", dest="map_file",
                        help="YAML of `source class: our class` (null drops it); each entry replaces the default "
                             "mapping's entry for that source class")
    parser.add_argument("--copy", action="store_true", help="copy the images instead of hard-linking them")
    parser.add_argument("--config", metavar="CONFIG",
                        help="take the subtask's classes from this config (default: configs/<family>_config.yaml)")


def _subtask(family: str, fmt: str, name: str, config_path) -> tuple[list[str], int]:
    """(classes, ignore index) of subtask `name` in the family's config."""
    from src.common.config_manager import ConfigManager
    from src.common.errors import UserError

    path = Path(config_path) if config_path else CODE_ROOT / "configs" / f"{family}_config.yaml"
    manager = ConfigManager(path)
    if manager.task != family:
        raise UserError(f"--config {path} is a {manager.task} config, but {fmt} converts to {family}; pass a "
                        f"{family} config (e.g. configs/{family}_config.yaml)")
    tasks = manager.get_config()[family]["tasks"]
    if name not in tasks:
        raise UserError(f"unknown --task {name!r} for {fmt}: {path} defines the {family} subtasks "
                        f"{', '.join(tasks)}; choose one, or pass --config with a config that defines {name}")
    return list(tasks[name]["classes"]), tasks[name].get("ignore_index", 255)


def _print_summary(summary: dict, out: str, config_path) -> None:
    counts = summary["counts"]
    splits = ", ".join(f"{split} {info['images']}" for split, info in summary.get("splits", {}).items())
    print(f"Converted {counts['images']} {summary['format']} images into {out} for {summary['task']}"
          f"{f' ({splits})' if splits else ''}; {summary['images_linked']} hard-linked, "
          f"{summary['images_copied']} copied")
    if summary["family"] == "detection":
        print("  objects: " + ", ".join(f"{name} {n}" for name, n in counts["objects"].items()))
        print(f"  clipped to the image: {counts['clipped_boxes']} box(es)")
        dropped = counts["dropped"]
        unmapped = ", ".join(f"{name} {n}" for name, n in dropped["not_in_mapping"].items()) or "none"
        extra = "".join(f"; {reason.replace('_', ' ')}: {n}" for reason, n in dropped.items()
                        if reason not in ("not_in_mapping", "degenerate_box"))
        print(f"  dropped: not in the mapping: {unmapped}; degenerate box: {dropped['degenerate_box']}{extra}")
    else:
        pixels = ", ".join(f"{name} {n}" for name, n in counts["pixels"].items())
        print(f"  pixels: {pixels}; ignored ({summary['ignore_index']}) {counts['ignored_pixels']}")
    if summary["unused_map_entries"]:
        print(f"note: --map entries never seen in the source (typos?): {', '.join(summary['unused_map_entries'])}",
              file=sys.stderr)
    if summary["family"] == "detection" and not any(counts["objects"].values()):
        print(f"note: no object was converted; check the mapping in {out}/conversion.yaml against the source's "
              "class names (--map)", file=sys.stderr)
    family, task = summary["family"], summary["task"]
    data_yaml = f"configs/datasets/{task}.yaml"
    yaml_hint = f" --data-yaml {data_yaml}" if not config_path and (CODE_ROOT / data_yaml).is_file() else ""
    data = f"--train-data {out}/train --val-data {out}/val" if "splits" in summary else f"--train-data {out}"
    print(f"Use it with: {data}{yaml_hint} (config: {config_path or f'configs/{family}_config.yaml'}, "
          f"--{family}-task {task})")
    print(f"Provenance: {out}/conversion.yaml")


def run(args: argparse.Namespace) -> int:
    from src.data.convert.converter import convert, family_of

    family = family_of(args.format)
    classes, ignore_index = _subtask(family, args.format, args.task, args.config)
    summary = convert(args.format, args.src, args.task, classes, args.out, images=args.images, split=args.split,
                      val_fraction=args.val_fraction, seed=args.seed, map_file=args.map_file, copy=args.copy,
                      ignore_index=ignore_index)
    _print_summary(summary, args.out, args.config)
    return 0
