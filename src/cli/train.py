"""`train`: train a model and register it (scripts/train.py)."""

import argparse

from src.cli.common_args import add_config_and_task, subtask_of

HELP = "train a detection or segmentation model into a new run directory and register it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_and_task(parser)
    parser.add_argument("--train-data", required=True, help="training split: a folder with images/ and "
                        "labels/ (or masks/), an ultralytics images/<split> folder, or a .txt image list")
    parser.add_argument("--val-data", required=True, help="validation split (same forms as --train-data)")
    parser.add_argument("--run-name", help="name part of the run id <YYYYMMDD_HHMMSS>_<run name> "
                        "(default: the task name)")
    parser.add_argument("--resume", metavar="CHECKPOINT_OR_RUN", help="continue a run from its "
                        "checkpoint_epoch_N.pth (or the newest one of a run id / run dir); segmentation only")
    parser.add_argument("--mlflow", action="store_true", default=None,
                        help="log each epoch to MLflow while training (tracking.mlflow.* in the config)")
    parser.add_argument("--wandb", action="store_true", default=None,
                        help="log each epoch to Weights & Biases while training (tracking.wandb.*)")
    parser.add_argument("--seed", type=int, help="random seed (beats STREET_SCENE_SEED and the config's seed; "
                        "default 42)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from src.pipelines.runner import TrainRequest, train

    request = TrainRequest(
        config_path=Path(args.config), task=args.task, subtask=subtask_of(args), train_data=args.train_data,
        val_data=args.val_data, data_yaml=args.data_yaml, run_name=args.run_name,
        overrides=args.config_override, seed=args.seed, resume=args.resume,
        mlflow=args.mlflow, wandb=args.wandb,
    )
    train(request)
    return 0
