"""StreetScenePipeline: the documented Python API (README), over the same code paths as the scripts."""

from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from src.common.report import with_notes_shown


class StreetScenePipeline:
    """`StreetScenePipeline(config_path, 'detection', detection_task='vehicle_detection')`, or generically
    `StreetScenePipeline(config_path, task, subtask=...)` for any subtask the config defines.

    Config loading and checks happen in `train` / `evaluate` (through ConfigManager), exactly as for
    `scripts/train.py` and `scripts/evaluate.py`.
    """

    def __init__(self, config_path, task: str, detection_task: Optional[str] = None,
                 segmentation_task: Optional[str] = None, overrides: Sequence[str] = (),
                 seed: Optional[int] = None, subtask: Optional[str] = None):
        from src.common.errors import UserError
        from src.tasks import check_family

        self.config_path = Path(config_path)
        self.task = check_family(task)
        named = {"detection": detection_task, "segmentation": segmentation_task}
        wrong = [f"{k}_task" for k, v in named.items() if v is not None and k != task]
        if wrong:
            raise UserError(f"{wrong[0]}= does not apply to task {task!r}; use subtask=")
        given = {v for v in (subtask, named.get(task)) if v is not None}
        if len(given) > 1:
            raise UserError(f"subtask={subtask!r} and {task}_task={named.get(task)!r} disagree; give one")
        self.subtask = given.pop() if given else None
        self.overrides = list(overrides)
        self.seed = seed

    @with_notes_shown
    def train(self, train_data_path, val_data_path, data_yaml=None, run_name: Optional[str] = None
              ) -> Dict[str, Any]:
        """Train and register; returns run_id, run_dir, checkpoint_path and the final metrics."""
        from src.pipelines.runner import TrainRequest, train

        result = train(TrainRequest(
            config_path=self.config_path, task=self.task, subtask=self.subtask, train_data=str(train_data_path),
            val_data=str(val_data_path), data_yaml=data_yaml, run_name=run_name, overrides=self.overrides,
            seed=self.seed,
        ))
        return {"run_id": result.run_id, "run_dir": str(result.run_dir),
                "checkpoint_path": str(result.checkpoint_path), "metrics": result.metrics}

    @with_notes_shown
    def evaluate(self, test_data_path, checkpoint_path, data_yaml=None, verify_config: bool = False,
                 strict: bool = False) -> Dict[str, Any]:
        """Evaluate a checkpoint; without data_yaml the class names come from the checkpoint."""
        from src.pipelines.evaluation import EvalRequest, evaluate

        return evaluate(EvalRequest(
            config_path=self.config_path, task=self.task, subtask=self.subtask, test_data=str(test_data_path),
            checkpoint_path=Path(checkpoint_path), data_yaml=data_yaml, overrides=self.overrides, seed=self.seed,
            verify_config=verify_config, strict=strict,
        ))

    @with_notes_shown
    def leaderboard(self, test_data_path, data_yaml=None, metric: Optional[str] = None, top: Optional[int] = None,
                    registry_path=None, progress: bool = False) -> Dict[str, Any]:
        """Batch evaluation in one call: every registered run of this pipeline's subtask evaluated
        on `test_data_path` with its own config and checkpoint, ranked (`rows`: rank, run_id, value, gap, verify,
        ...). Results are cached beside each run, as for `street-scene leaderboard`."""
        from src.common.errors import UserError
        from src.reporting.leaderboard import LeaderboardRequest, build_leaderboard

        if self.subtask is None:
            raise UserError(f"leaderboard needs a subtask: StreetScenePipeline(..., {self.task}_task=...)")
        return build_leaderboard(LeaderboardRequest(
            subtask=self.subtask, test_data=str(test_data_path), data_yaml=data_yaml, metric=metric, top=top,
            registry_path=Path(registry_path) if registry_path is not None else None, progress=progress,
        ))

    @with_notes_shown
    def predict(self, source, checkpoint, out=None, conf: Optional[float] = None, iou: Optional[float] = None,
                imgsz: Optional[int] = None, save_images: bool = False, force: bool = False) -> list:
        """Predict with a checkpoint, run id or exported .onnx of this pipeline's task (another task's model is
        refused) on an image, folder, .txt list or video; returns the records (also saved with provenance)."""
        from src.inference.predict import PredictRequest, predict_source

        result = predict_source(PredictRequest(
            checkpoint=str(checkpoint), source=str(source), out=Path(out) if out is not None else None, conf=conf,
            iou=iou, imgsz=imgsz, save_images=save_images, force=force, task=self.task,
        ))
        return result["records"]
