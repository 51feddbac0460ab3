"""Arguments shared by train and evaluate (same names as the user guide)."""

import argparse

TASK_CHOICES = ("detection", "segmentation")


def add_config_and_task(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config file (e.g. configs/detection_config.yaml "
                        "or outputs/<run_id>/config.yaml)")
    parser.add_argument("--task", required=True, choices=TASK_CHOICES, help="model family")
    parser.add_argument("--detection-task", help="vehicle_detection, pedestrian_detection or "
                        "traffic_sign_detection (defined under detection.tasks in the config)")
    parser.add_argument("--segmentation-task", help="e.g. road_scene_segmentation (segmentation.tasks)")
    parser.add_argument("--data-yaml", help="dataset YAML with class names (configs/datasets/<task>.yaml)")
    parser.add_argument("--config-override", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. detection.training.learning_rate=0.001 "
                        "(repeatable; values are JSON/YAML: 64, 1e-3, true, null, [512,512]; "
                        "+new.key=value adds a key)")


def subtask_of(args: argparse.Namespace):
    return args.detection_task if args.task == "detection" else args.segmentation_task
