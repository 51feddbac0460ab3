"""`street-scene make-dataset`: write a deterministic synthetic street-scene dataset for one task."""

import argparse

HELP = "write a synthetic street-scene dataset (YOLO detection layout or segmentation images/masks)"

# The subtasks the generator knows without a config (the shipped configs define the same ones).
DETECTION_TASKS = ("vehicle_detection", "pedestrian_detection", "traffic_sign_detection")
SEGMENTATION_TASK = "road_scene_segmentation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, metavar="SUBTASK",
                        help=f"whose classes to draw: {', '.join((*DETECTION_TASKS, SEGMENTATION_TASK))}, or any "
                             "subtask of --config whose classes the generator can draw")
    parser.add_argument("--config", metavar="CONFIG", help="take the subtask and its classes from this config "
                                                          "(detection or segmentation)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="new or empty folder to create; gets train/, val/, test/ (never overwrites data)")
    parser.add_argument("--train", type=int, metavar="N", default=200, help="number of training images (default 200)")
    parser.add_argument("--val", type=int, metavar="N", default=50, help="number of validation images (default 50)")
    parser.add_argument("--test", type=int, metavar="N", default=50,
                        help="number of test images, 0 for none (default 50)")
    parser.add_argument("--seed", type=int, metavar="S", default=42,
                        help="same seed, same files byte for byte (default 42)")
    parser.add_argument("--image-size", type=int, default=None, metavar="N",
                        help="detection: square side in pixels (default 320); segmentation: width, the height "
                             "being half of it (default 256, i.e. 256x128)")


def _print_summary(summary: dict, out, config_path=None) -> None:
    for split, info in summary["splits"].items():
        if "objects" in info:
            objects = ", ".join(f"{name} {n}" for name, n in info["objects"].items())
            print(f"  {split}: {info['images']} images ({info['background_images']} without objects); {objects}")
        else:
            print(f"  {split}: {info['images']} image/mask pairs")
    family = "segmentation" if "ignore_index" in summary else "detection"
    config = config_path or f"configs/{family}_config.yaml"
    yaml_hint = f" --data-yaml configs/datasets/{summary['task']}.yaml" if summary["task"] in (
        *DETECTION_TASKS, SEGMENTATION_TASK) else ""
    print(f"Use it with: --train-data {out}/train --val-data {out}/val{yaml_hint} "
          f"(config: {config})")


def _family_and_classes(args):
    """(family, classes or None): from --config when given, else the built-in subtask names."""
    if args.config is None:
        if args.task not in (*DETECTION_TASKS, SEGMENTATION_TASK):
            from src.common.errors import UserError

            raise UserError(f"unknown --task {args.task!r}: without --config, choose one of "
                            f"{', '.join((*DETECTION_TASKS, SEGMENTATION_TASK))}")
        return ("segmentation" if args.task == SEGMENTATION_TASK else "detection"), None
    from src.pipelines.job import resolve_subtask
    from src.common.config_manager import ConfigManager

    cm = ConfigManager(args.config)
    config = cm.get_config()
    subtask = resolve_subtask(config, cm.task, args.task)
    return cm.task, config[cm.task]["tasks"][subtask]["classes"]


def run(args: argparse.Namespace) -> int:
    from src.data import synthetic

    family, classes = _family_and_classes(args)
    if family == "segmentation":
        width = args.image_size or 256
        summary = synthetic.make_segmentation_dataset(args.out, args.train, args.val, args.test, args.seed,
                                                      image_size=(width, width // 2), classes=classes,
                                                      task=args.task)
    else:
        summary = synthetic.make_detection_dataset(args.task, args.out, args.train, args.val, args.test, args.seed,
                                                   image_size=args.image_size or 320, classes=classes)
    total = sum(info["images"] for info in summary["splits"].values())
    print(f"Wrote {total} synthetic {args.task} images to {args.out} (seed {args.seed})")
    _print_summary(summary, args.out, args.config)
    return 0
