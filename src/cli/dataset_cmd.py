"""`street-scene make-dataset`: write a deterministic synthetic street-scene dataset for one task."""

import argparse

HELP = "write a synthetic street-scene dataset (YOLO detection layout or segmentation images/masks)"

DETECTION_TASKS = ("vehicle_detection", "pedestrian_detection", "traffic_sign_detection")
SEGMENTATION_TASK = "road_scene_segmentation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=(*DETECTION_TASKS, SEGMENTATION_TASK), metavar="TASK",
                        help=f"which task's classes to draw: {', '.join((*DETECTION_TASKS, SEGMENTATION_TASK))}")
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


def _print_summary(summary: dict, out) -> None:
    for split, info in summary["splits"].items():
        if "objects" in info:
            objects = ", ".join(f"{name} {n}" for name, n in info["objects"].items())
            print(f"  {split}: {info['images']} images ({info['background_images']} without objects); {objects}")
        else:
            print(f"  {split}: {info['images']} image/mask pairs")
    config = "detection" if summary["task"] in DETECTION_TASKS else "segmentation"
    print(f"Use it with: --train-data {out}/train --val-data {out}/val --data-yaml "
          f"configs/datasets/{summary['task']}.yaml (config: configs/{config}_config.yaml)")


def run(args: argparse.Namespace) -> int:
    from src.data import synthetic

    if args.task == SEGMENTATION_TASK:
        width = args.image_size or 256
        summary = synthetic.make_segmentation_dataset(args.out, args.train, args.val, args.test, args.seed,
                                                      image_size=(width, width // 2))
    else:
        summary = synthetic.make_detection_dataset(args.task, args.out, args.train, args.val, args.test, args.seed,
                                                   image_size=args.image_size or 320)
    total = sum(info["images"] for info in summary["splits"].values())
    print(f"Wrote {total} synthetic {args.task} images to {args.out} (seed {args.seed})")
    _print_summary(summary, args.out)
    return 0
