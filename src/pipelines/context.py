"""What a task gets from the shared run lifecycle: plain values plus the two ways it writes results.

A task never creates files of the run itself except through `save_checkpoint` and `log_epoch`, so every
task's run directory, checkpoint format and metrics file are the same.

Checkpoint files are serialized and written on a background thread (the training loop only pays for copying
the weights); the runner calls `finish_checkpoints()` before it hashes or registers anything.
"""

import copy
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from src.common.atomic import atomic_write_with
from src.common.background_writer import BackgroundWriter
from src.common.checkpoint import build_checkpoint, save_checkpoint
from src.common.metadata import now_iso, update_metadata

from src.common.run_dir import (BEST_CHECKPOINT, METADATA_FILE, METRICS_FILE, epoch_checkpoint_name,
                                epoch_of_checkpoint, write_metrics_csv)
from src.tasks.contract import PreparedData


@dataclass
class TrainContext:
    config: Dict[str, Any]
    config_hash: str
    task: str
    subtask: str
    seed: int
    device: str
    run_id: str
    run_dir: Path
    data: PreparedData
    metadata: Dict[str, Any]
    save_every: int = 1
    keep_last: int = 0
    resume: Optional[Dict[str, Any]] = None  # the checkpoint being resumed, when resuming
    stop_after_epoch: Optional[int] = None  # tasks stop after this epoch, config (and schedules) unchanged
    epoch_hooks: List[Callable[[int, Dict[str, Any]], None]] = field(default_factory=list)
    history: List[Dict[str, Any]] = field(default_factory=list)
    is_main: bool = True
    # A training-curves PNG the task's library already drew from the same per-epoch metrics (ultralytics'
    # results.png): the run uses a copy of it instead of drawing the same curves a second time.
    curves_image: Optional[Path] = None
    _writer: BackgroundWriter = field(default_factory=lambda: BackgroundWriter("street-scene-checkpoint"),
                                      init=False, repr=False, compare=False)

    def save_checkpoint(self, epoch: int, model_state: Any, model_spec: Dict[str, Any],
                        metrics: Dict[str, Any], *, is_best: bool = False, last: bool = False,
                        train_state: Optional[Dict[str, Any]] = None) -> Optional[Path]:
        """Save `checkpoint_epoch_N.pth` when the policy says so (every `save_every` epochs and the last
        epoch; keep the newest `keep_last`, 0 = all) and `best_model.pth` when `is_best`; return the path the
        checkpoint will have (written in the background: see finish_checkpoints).

        `model_state` may be a callable returning the state dict, so nothing is copied on epochs not saved.
        """
        if not self.should_save(epoch, is_best, last):
            return None
        periodic = last or (self.save_every > 0 and epoch % self.save_every == 0)
        if callable(model_state):
            model_state = model_state()
        ckpt = build_checkpoint(task=self.task, subtask=self.subtask, model_state=model_state,
                                model_spec=model_spec, epoch=epoch, metrics=metrics, config=self.config,
                                config_hash=self.config_hash, metadata=self.metadata, train_state=train_state,
                                final=last)
        # build_checkpoint copied the weights; the rest (optimizer state tensors are updated in place by the
        # next step, dicts may change) is copied here too, so the background write sees this epoch only.
        ckpt.update(copy.deepcopy({k: v for k, v in ckpt.items() if k != "model_state"}))
        periodic_path = self.run_dir / epoch_checkpoint_name(epoch) if periodic else None
        best_path = self.run_dir / BEST_CHECKPOINT if is_best else None
        self._writer.submit(lambda: self._write_checkpoint(ckpt, periodic_path, best_path))
        return periodic_path or best_path

    def _write_checkpoint(self, ckpt: Dict[str, Any], periodic_path: Optional[Path],
                          best_path: Optional[Path]) -> None:
        if periodic_path is not None:
            save_checkpoint(periodic_path, ckpt)
        if best_path is not None:
            if periodic_path is not None and "train_state" not in ckpt:  # same checkpoint: copy, don't re-pickle
                with open(periodic_path, "rb") as src:
                    atomic_write_with(best_path, lambda f: shutil.copyfileobj(src, f, 1 << 20), "wb")
            else:  # best_model.pth is for evaluation and deployment, not resuming
                save_checkpoint(best_path, {k: v for k, v in ckpt.items() if k != "train_state"})
        if periodic_path is not None:
            self._prune_epoch_checkpoints()

    def finish_checkpoints(self, raise_errors: bool = True) -> None:
        """Wait until every checkpoint save_checkpoint accepted is on disk (re-raising a write error)."""
        self._writer.close(raise_errors=raise_errors)

    def should_save(self, epoch: int, is_best: bool = False, last: bool = False) -> bool:
        """Whether save_checkpoint would write anything for this epoch (lets tasks skip costly state copies)."""
        periodic = last or (self.save_every > 0 and epoch % self.save_every == 0)
        return self.is_main and (periodic or is_best)

    def _prune_epoch_checkpoints(self) -> None:
        if self.keep_last <= 0:
            return
        found = sorted(self.run_dir.glob("checkpoint_epoch_*.pth"), key=epoch_of_checkpoint)
        for old in found[: -self.keep_last]:
            old.unlink()

    def log_epoch(self, epoch: int, metrics: Dict[str, Any]) -> None:
        """Record one epoch's metrics: metrics.csv (rewritten atomically), the run's heartbeat in metadata.yaml,
        and any tracking hooks."""
        row = {"epoch": epoch, **{k: _scalar(v) for k, v in metrics.items()}}
        self.history = [r for r in self.history if r["epoch"] != epoch] + [row]
        if self.is_main:
            write_metrics_csv(self.run_dir / METRICS_FILE, self.history)
            if (self.run_dir / METADATA_FILE).is_file():  # the runner wrote it; unit tests may not have
                update_metadata(self.run_dir, heartbeat_at=now_iso(), epochs_done=epoch)
            for hook in self.epoch_hooks:
                hook(epoch, dict(row))


@dataclass
class EvalContext:
    config: Dict[str, Any]
    task: str
    subtask: str
    device: str
    checkpoint: Dict[str, Any]
    checkpoint_path: Path
    data: PreparedData
    output_dir: Path


def _scalar(value: Any) -> Any:
    try:
        return float(value) if not isinstance(value, (int, str)) else value
    except (TypeError, ValueError):
        return str(value)
