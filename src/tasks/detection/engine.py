"""Train and evaluate ultralytics YOLO detectors with plain arguments.

The caller owns the run directory, checkpoints and metrics files; this module only drives ultralytics, whose own
files (args.yaml, results.csv, weights/*.pt, plots) stay inside `project_dir/name`; the one exception is the
`labels/<split>.cache` ultralytics writes beside each labels folder (skipped with a warning when read-only).
Call `offline.configure_ultralytics()` before the first call.

Determinism comes from ultralytics itself: the trainer seeds random/numpy/torch with `seed` and sets
deterministic algorithms before building the model, and switches them off again when training ends.
"""

import contextlib
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from src.common.errors import UserError
from src.data.data_yaml import parse_class_names, read_dataset_yaml
from src.tasks.detection.weights import build_model, fp32_cpu_state, load_pretrained, plain_data

BEST_METRIC = "val/mAP50-95"
_VAL_KEYS = {
    "metrics/precision(B)": "val/precision",
    "metrics/recall(B)": "val/recall",
    "metrics/mAP50(B)": "val/mAP50",
    "metrics/mAP50-95(B)": "val/mAP50-95",
}
# Set by train_yolo itself. `pretrained`/`resume` would load (or download) weights behind our back, `amp` runs
# check_amp (a download) on GPU, `deterministic`/`seed` are the reproducibility contract.
_RESERVED_ARGS = frozenset({
    "model", "data", "epochs", "batch", "imgsz", "lr0", "seed", "device", "workers", "optimizer", "project",
    "name", "exist_ok", "deterministic", "amp", "val", "plots", "pretrained", "resume", "mode", "task", "save_dir",
})
# 'auto' is left out on purpose: it silently replaces lr0 with its own choice.
_OPTIMIZERS = ("SGD", "MuSGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSprop")


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch: `epoch` is 1-based; `model_state()` is the fp32 CPU EMA state, only inside on_epoch."""

    epoch: int
    metrics: dict
    model_spec: dict  # what rebuilds the model (same for every epoch of a run), see TrainResult
    last: bool  # no epoch follows: the final one, or early stopping (patience) ends the run here
    model_state: Callable[[], dict] = field(repr=False, compare=False)


@dataclass(frozen=True)
class TrainResult:
    epochs: list  # EpochRecord per epoch, in order (their model_state() has expired)
    best_epoch: int  # 1-based, highest val/mAP50-95 (first one on ties, like ultralytics' best.pt)
    best_metrics: dict  # the best epoch's metrics
    model_state: dict  # the best epoch's fp32 CPU EMA state dict
    model_spec: dict  # {"architecture", "model_yaml", "names", "imgsz"}: rebuilds the model with build_model()
    save_dir: Path  # project_dir/name, where ultralytics wrote its own files
    num_threads: int  # torch intra-op threads training used
    determinism: dict  # determinism settings in force during training (ultralytics sets them itself)


class _StateSnapshot:
    """Clones the EMA weights on first call; refuses once its epoch's callback has returned."""

    def __init__(self, module, epoch: int):
        self._module, self._epoch, self._state = module, epoch, None

    def __call__(self) -> dict:
        if self._module is None:
            raise RuntimeError(f"epoch {self._epoch}'s model state is only available inside on_epoch")
        if self._state is None:
            self._state = fp32_cpu_state(self._module)
        return self._state

    def expire(self) -> None:
        self._module = self._state = None


class _EpochTracker:
    """ultralytics callbacks -> EpochRecords, the on_epoch hook and the best epoch's weights."""

    def __init__(self, on_epoch: Callable[[EpochRecord], None], architecture: str):
        self.on_epoch, self.architecture = on_epoch, architecture
        self.pending = None  # 0-based epoch whose training pass ended and whose validation is awaited
        self.records = []
        self.best = None  # (value, record, state)
        self.spec = self.save_dir = None
        self.num_threads = 0
        self.determinism = None  # the settings ultralytics' init_seeds put in force, read during training

    def on_train_epoch_end(self, trainer) -> None:
        self.pending = trainer.epoch
        if self.determinism is None:
            from src.common.seeding import determinism_settings

            self.determinism = determinism_settings()

    def on_fit_epoch_end(self, trainer) -> None:
        # final_eval() re-validates best.pt and fires this once more with epoch+1 and no training pass: skip it.
        if self.pending != trainer.epoch:
            return
        import torch

        self.pending, self.num_threads, self.save_dir = None, torch.get_num_threads(), Path(trainer.save_dir)
        self.spec = self.spec or _model_spec(trainer, self.architecture)
        snapshot = _StateSnapshot(trainer.ema.ema, trainer.epoch + 1)
        # trainer.stop already holds "final epoch or early stop" when this callback runs
        record = EpochRecord(trainer.epoch + 1, _epoch_metrics(trainer), self.spec, bool(trainer.stop), snapshot)
        value = record.metrics[BEST_METRIC]
        value = -math.inf if math.isnan(value) else value
        if self.best is None or value > self.best[0]:
            self.best = (value, record, snapshot())
        try:
            self.on_epoch(record)
        finally:
            snapshot.expire()
        self.records.append(record)


def _model_spec(trainer, architecture: str) -> dict:
    names = trainer.data["names"]
    return {
        "architecture": str(architecture),
        "model_yaml": plain_data(trainer.ema.ema.yaml),
        "names": [str(names[i]) for i in range(len(names))],
        "imgsz": int(trainer.args.imgsz),  # after ultralytics rounded it to a stride multiple
    }


def _epoch_metrics(trainer) -> dict:
    metrics = dict(trainer.label_loss_items(trainer.tloss, prefix="train"))
    metrics.update({_VAL_KEYS.get(k, k): float(v) for k, v in trainer.metrics.items()})
    metrics.update({k: float(v) for k, v in trainer.lr.items()})
    metrics["fitness"] = float(trainer.fitness)
    return metrics


def train_yolo(*, architecture: str, data_yaml: Path, project_dir: Path, name: str, epochs: int, batch: int,
               imgsz: int, lr0: float, seed: int, device: str, workers: int, optimizer: str, extra_args: dict,
               weights: Optional[Path], on_epoch: Callable[[EpochRecord], None], plots: bool = True,
               stop_after_epoch: Optional[int] = None, model=None) -> TrainResult:
    """Train `architecture` (an ultralytics model yaml) from scratch or from local `weights`; see TrainResult.

    `model` is the unused YOLO object check_train_inputs returned for the same architecture, or None to build
    one here. Reusing it changes nothing in the run: the trainer rebuilds the network from its yaml after
    seeding, exactly as it does for a fresh YOLO(architecture).

    `stop_after_epoch` ends training after that (1-based) epoch while `epochs` still sets the LR schedule and
    close_mosaic, so the epochs run are those of the full run; its EpochRecord has `last=True`.
    """
    import torch

    _check_train_args(epochs=epochs, batch=batch, imgsz=imgsz, optimizer=optimizer, extra_args=extra_args)
    data_yaml = Path(data_yaml).expanduser().resolve()
    parse_class_names(read_dataset_yaml(data_yaml), data_yaml)  # refuses `download:`, which ultralytics would run
    if model is not None and getattr(model, "trainer", None) is not None:
        raise ValueError("train_yolo(model=...) takes the untrained YOLO object check_train_inputs returned")
    yolo = model if model is not None else _new_yolo(architecture)
    if weights is not None:
        yolo.load(load_pretrained(weights))  # transfers every tensor whose name and shape match
    tracker = _EpochTracker(on_epoch, architecture)
    if stop_after_epoch is not None:  # registered before the tracker, so its record already sees trainer.stop
        yolo.add_callback("on_fit_epoch_end", _stop_after(stop_after_epoch))
    yolo.add_callback("on_train_epoch_end", tracker.on_train_epoch_end)
    yolo.add_callback("on_fit_epoch_end", tracker.on_fit_epoch_end)
    # ultralytics' select_device() pins CPU training to min(8, cpu_count - 1) threads: a fixed rule, so a run
    # does not depend on the thread count the process happened to have (CPU kernels can depend on it).
    threads = torch.get_num_threads()
    args = dict(data=str(data_yaml), epochs=epochs, batch=batch, imgsz=imgsz, lr0=lr0, seed=seed, device=device,
                workers=workers, optimizer=optimizer, project=str(Path(project_dir).expanduser().resolve()),
                name=name, exist_ok=True, deterministic=True, amp=False, val=True, plots=plots)
    try:
        with _dataset_errors_as_user_errors():
            yolo.train(**extra_args, **args)
    except FileNotFoundError as e:
        # With save=False ultralytics writes last.pt only at the planned final epoch; when patience/time stop the
        # run earlier, YOLO.train() fails *after* training while reloading that file into the YOLO object, which
        # we don't use. The records are complete, so the run is not lost.
        if not (str(e).startswith("Training completed but no checkpoint was saved") and tracker.records
                and tracker.records[-1].last):
            raise
    finally:
        torch.set_num_threads(threads)  # the trainer's select_device() changed it for the whole process
    return _train_result(tracker)


def _stop_after(epoch: int) -> Callable:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise UserError(f"stop after epoch must be a positive integer, got {epoch!r}")

    def stop(trainer) -> None:
        # The trainer checks `stop` right after on_fit_epoch_end and breaks before the next epoch.
        if trainer.epoch + 1 >= epoch:
            trainer.stop = True

    return stop


def _train_result(tracker: _EpochTracker) -> TrainResult:
    if tracker.best is None:
        raise RuntimeError("ultralytics finished without completing an epoch")
    _, best, state = tracker.best
    return TrainResult(epochs=list(tracker.records), best_epoch=best.epoch, best_metrics=dict(best.metrics),
                       model_state=state, model_spec=tracker.spec, save_dir=tracker.save_dir,
                       num_threads=tracker.num_threads, determinism=tracker.determinism or {})


def evaluate_yolo(*, model_spec: dict, model_state: dict, data_yaml: Path, split: str, imgsz: int, batch: int,
                  device: str, project_dir: Path, name: str, conf: float = 0.001, iou: float = 0.7,
                  plots: bool = True) -> dict:
    """mAP50, mAP50-95, precision, recall, per_class_AP ({name: AP50-95, None when the split has none}), speed."""
    import torch

    data_yaml = Path(data_yaml).expanduser().resolve()
    data = read_dataset_yaml(data_yaml)
    names = parse_class_names(data, data_yaml)
    if names != list(model_spec["names"]):
        raise UserError(f"checkpoint classes {list(model_spec['names'])} differ from the classes in {data_yaml} "
                        f"{names}; evaluate with the data yaml the model was trained for")
    if not data.get(split):
        raise UserError(f"data yaml {data_yaml} has no '{split}' split; add '{split}: <images folder or .txt>'")
    yolo = build_model(model_spec, model_state)
    threads = torch.get_num_threads()
    try:
        with _dataset_errors_as_user_errors():
            metrics = yolo.val(data=str(data_yaml), split=split, imgsz=imgsz, batch=batch, device=device,
                               conf=conf, iou=iou, plots=plots, project=str(Path(project_dir).expanduser().resolve()),
                               name=name, exist_ok=True)
    finally:
        torch.set_num_threads(threads)
    return _eval_metrics(metrics, model_spec["names"])


def _eval_metrics(metrics, names: list) -> dict:
    box = metrics.box
    per_class = dict.fromkeys(names)
    for i, c in enumerate(box.ap_class_index):  # classes with ground truth in this split
        per_class[names[int(c)]] = float(box.ap[i])
    return {"mAP50": float(box.map50), "mAP50-95": float(box.map), "precision": float(box.mp),
            "recall": float(box.mr), "per_class_AP": per_class,
            "speed": {k: float(v) for k, v in metrics.speed.items()}}


def check_train_inputs(*, architecture: str, epochs, batch, imgsz, optimizer, extra_args):
    """Everything train_yolo would refuse about its arguments, checked before a run dir exists.

    Returns the YOLO object built from `architecture` for the check: pass it to train_yolo(model=...) so the
    model is not built twice (a fixed cost of ~0.2 s per run for a nano model).
    """
    _check_train_args(epochs=epochs, batch=batch, imgsz=imgsz, optimizer=optimizer, extra_args=extra_args)
    return _new_yolo(architecture)


def _check_train_args(*, epochs, batch, imgsz, optimizer, extra_args) -> None:
    from ultralytics.cfg import DEFAULT_CFG_DICT, check_cfg

    for key, value in (("epochs", epochs), ("batch", batch), ("imgsz", imgsz)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"detection {key} must be a positive integer, got {value!r}")
    if str(optimizer).lower() not in {o.lower() for o in _OPTIMIZERS}:
        raise UserError(f"detection optimizer {optimizer!r} is not one of {', '.join(_OPTIMIZERS)} "
                        "('auto' is refused: it ignores the configured learning rate)")
    reserved = sorted(set(extra_args) & _RESERVED_ARGS)
    if reserved:
        raise UserError(f"extra ultralytics arguments {reserved} are set by street-scene itself; remove them")
    for key in extra_args:
        if key not in DEFAULT_CFG_DICT:
            close = difflib.get_close_matches(key, list(DEFAULT_CFG_DICT), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UserError(f"unknown ultralytics training argument {key!r}{hint}")
    try:
        check_cfg(dict(extra_args))  # ultralytics' own type/range checks, before any file is written
    except (TypeError, ValueError) as e:
        raise UserError(f"extra ultralytics training arguments: {' '.join(str(e).split())}")


def _new_yolo(architecture: str):
    from ultralytics import YOLO

    if not str(architecture).lower().endswith((".yaml", ".yml")):
        raise UserError(f"detection architecture must be an ultralytics model yaml such as yolo11n.yaml, got "
                        f"{architecture!r}; pass pretrained weights separately as weights")
    try:
        yolo = YOLO(str(architecture))
    except FileNotFoundError:
        raise UserError(f"model yaml {architecture!r} not found: use a built-in name such as yolo11n.yaml or "
                        "yolov8n.yaml, or the path of an existing yaml")
    if yolo.task != "detect":
        raise UserError(f"model yaml {architecture!r} builds a {yolo.task} model; detection needs a detect yaml")
    return yolo


@contextlib.contextmanager
def _dataset_errors_as_user_errors():
    # ultralytics reports a bad dataset as RuntimeError("Dataset '...' error ...") (train) or
    # FileNotFoundError("Dataset '...' images not found ...") (val); anything else is a real failure.
    try:
        yield
    except (RuntimeError, FileNotFoundError) as e:
        if not str(e).startswith("Dataset '"):
            raise
        raise UserError(" ".join(str(e).split())) from e
