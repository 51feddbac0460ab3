"""Experiment trackers (MLflow, Weights & Biases): sync run directories into them, or log live while training.

The documented helpers, doing exactly what `street-scene sync mlflow|wandb RUN` does:

    from src.tracking import log_to_mlflow, log_to_wandb
    log_to_mlflow("outputs/20240115_143022_vehicle_detection", "20240115_143022_vehicle_detection")
    log_to_wandb("outputs/20240115_143022_vehicle_detection")

mlflow and wandb are optional extras (`pip install -e '.[mlflow]'`, `'.[wandb]'`); they are imported only
inside these functions, never by the rest of street-scene.
"""

from pathlib import Path
from typing import Optional, Union

from src.common.errors import UserError

PathLike = Union[str, Path]

__all__ = ["log_to_mlflow", "log_to_wandb"]


def log_to_mlflow(run_dir: PathLike, run_id: Optional[str] = None, *, tracking_uri: Optional[str] = None,
                  experiment: Optional[str] = None, register_model: Optional[str] = None,
                  log_checkpoint: bool = False, artifact_location: Optional[str] = None):
    """Create or update the MLflow run of `run_dir` (params, metric history, final metrics, tags, files;
    with `register_model`, an mlflow.pyfunc model version).

    `run_id`, when given, must be the run's id (a guard against syncing the wrong folder). Returns an
    MlflowSyncResult (our run id, the MLflow run id, experiment id, whether it was created, model version).
    """
    from src.tracking.mlflow_sync import sync_mlflow

    _check_run_id(run_dir, run_id)
    return sync_mlflow(str(run_dir), tracking_uri=tracking_uri, experiment=experiment,
                       register_model=register_model, log_checkpoint=log_checkpoint,
                       artifact_location=artifact_location)


def log_to_wandb(run_dir: PathLike, *, project: Optional[str] = None, mode: Optional[str] = None,
                 entity: Optional[str] = None, log_checkpoint: bool = False):
    """Create or resume the W&B run of `run_dir` (offline unless mode/config/WANDB_MODE say online).

    Returns a WandbSyncResult (W&B run id, mode, and the offline folder or the run URL).
    """
    from src.tracking.wandb_sync import sync_wandb

    return sync_wandb(str(run_dir), project=project, mode=mode, entity=entity, log_checkpoint=log_checkpoint)


def _check_run_id(run_dir: PathLike, run_id: Optional[str]) -> None:
    if run_id is None:
        return
    from src.common.metadata import read_metadata
    from src.common.run_dir import resolve_run

    actual = read_metadata(resolve_run(str(run_dir))).get("run_id")
    if actual and actual != run_id:
        raise UserError(f"{run_dir} holds run {actual!r}, not {run_id!r}; pass the matching run dir and id")
