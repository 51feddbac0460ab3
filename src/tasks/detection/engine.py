"""Train and evaluate ultralytics YOLO detectors with plain arguments.

The caller owns the run directory, checkpoints and metrics files; this module only drives ultralytics, whose own
files (args.yaml, results.csv, weights/*.pt, plots) stay inside `project_dir/name`; the one exception is the
`labels/<split>.cache` ultralytics writes beside each labels folder (skipped with a warning when read-only).
Call `offline.configure_ultralytics()` before the first call.

Determinism comes from ultralytics itself: the trainer seeds random/numpy/torch with `seed` and sets
deterministic algorithms before building the model, and switches them off again when training ends.
"""

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from src.common.errors import RunFailedError, UserError
from src.data.data_yaml import class_names, parse_class_names, read_dataset_yaml
from src.tasks.detection.weights import build_model, fp32_cpu_state, load_pretrained, plain_data

BEST_METRIC = "val/mAP50-95"
_VAL_KEYS = {
    "metrics/precision(B)": "val/precision",
    "metrics/recall(B)": "val/recall",
    "metrics/mAP50(B)": "val/mAP50",
    "metrics/mAP50-95(B)": "val/mAP50-95",
}
# Set by train_yolo itself and never taken from `train_args`. `pretrained`/`resume` would load (or download)
# weights behind our back, `amp` runs check_amp (a download) on GPU, `deterministic`/`seed` are the
# reproducibility contract, `save`/`save_period` would write pickled checkpoints we replace with our own.
_RESERVED_ARGS = frozenset({
    "model", "data", "seed", "device", "project", "name", "exist_ok", "deterministic", "amp", "val", "pretrained",
    "resume", "mode", "task", "save_dir", "save", "save_period", "cfg", "time",
})
@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch: `epoch` is 1-based; `model_state()` is the fp32 CPU EMA state, only inside on_epoch."""

    epoch: int
    metrics: dict
    model_spec: dict  # what rebuilds the model (same for every epoch of a run), see YoloTrainResult
    last: bool  # no epoch follows: the final one, or early stopping (patience) ends the run here
    model_state: Callable[[], dict] = field(repr=False, compare=False)


@dataclass(frozen=True)
class YoloTrainResult:
    """What train_yolo reports once training ends. The weights are not in it: a caller keeps the epochs' states it
    wants from on_epoch (the task saves them as checkpoints), so no copy is held here for nobody."""

    epochs: list  # EpochRecord per epoch, in order (their model_state() has expired)
    best_epoch: int  # 1-based, highest val/mAP50-95 (first one on ties, like ultralytics' best.pt)
    best_metrics: dict  # the best epoch's metrics
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

    def __init__(self, on_epoch: Callable[[EpochRecord], None], architecture: str, train_args: dict):
        self.on_epoch, self.architecture, self.train_args = on_epoch, architecture, train_args
        self.pending = None  # 0-based epoch whose training pass ended and whose validation is awaited
        self.records = []
        self.best = None  # (value, record)
        self.spec = self.save_dir = None
        self.num_threads = 0
        self.determinism = None  # the settings ultralytics' init_seeds put in force, read during training

    def on_train_batch_end(self, trainer) -> None:
        # ultralytics only warns about a NaN loss on the first epoch and "recovers" from last.pt later (which
        # we never write): fail the run at the first non-finite step instead.
        loss = trainer.loss
        if loss is not None and not bool(loss.detach().isfinite().all()):
            raise RunFailedError(f"training loss became {float(loss.detach().sum())} at epoch {trainer.epoch + 1}; "
                                 "lower detection.training.learning_rate or check the labels")

    def on_train_epoch_end(self, trainer) -> None:
        _check_effective_args(trainer.args, self.train_args, "during training")  # e.g. an OOM halved the batch
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
        bad = sorted(k for k, v in record.metrics.items() if not math.isfinite(v))
        if bad:
            raise RunFailedError(f"{', '.join(bad)} became {record.metrics[bad[0]]} at epoch {record.epoch}; lower "
                                 "detection.training.learning_rate or check the data")
        value = record.metrics[BEST_METRIC]
        if self.best is None or value > self.best[0]:
            self.best = (value, record)
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


def train_yolo(*, architecture: str, data_yaml: Path, project_dir: Path, name: str, train_args: dict, seed: int,
               device: str, weights: Optional[Path], on_epoch: Callable[[EpochRecord], None],
               stop_after_epoch: Optional[int] = None, model=None) -> YoloTrainResult:
    """Train `architecture` (an ultralytics model yaml) from scratch or from local `weights`; see YoloTrainResult.

    `train_args` are ultralytics train arguments (epochs, batch, imgsz, lr0, ... as src.tasks.detection.schema
    maps a config); each must be what ultralytics actually trains with: one it changes (an OOM retry halving
    `batch`, ...) fails the run, and so does a difference in the `args.yaml` it records.

    `model` is the unused YOLO object check_train_inputs returned for the same architecture, or None to build
    one here. Reusing it changes nothing in the run: the trainer rebuilds the network from its yaml after
    seeding, exactly as it does for a fresh YOLO(architecture).

    `stop_after_epoch` ends training after that (1-based) epoch while `epochs` still sets the LR schedule and
    close_mosaic, so the epochs run are those of the full run; its EpochRecord has `last=True`.
    """
    import torch

    data_yaml = Path(data_yaml).expanduser().resolve()
    class_names(data_yaml)  # refuses `download:`, which ultralytics would run
    if model is not None and getattr(model, "trainer", None) is not None:
        raise ValueError("train_yolo(model=...) takes the untrained YOLO object check_train_inputs returned")
    yolo = model if model is not None else _new_yolo(architecture)
    _check_train_args(train_args, yolo)
    if weights is not None:
        yolo.load(load_pretrained(weights))  # transfers every tensor whose name and shape match
    tracker = _EpochTracker(on_epoch, architecture, train_args)
    if stop_after_epoch is not None:  # registered before the tracker, so its record already sees trainer.stop
        yolo.add_callback("on_fit_epoch_end", _stop_after(stop_after_epoch))
    yolo.add_callback("on_train_batch_end", tracker.on_train_batch_end)
    yolo.add_callback("on_train_epoch_end", tracker.on_train_epoch_end)
    yolo.add_callback("on_fit_epoch_end", tracker.on_fit_epoch_end)
    # ultralytics' select_device() pins CPU training to min(8, cpu_count - 1) threads: a fixed rule, so a run
    # does not depend on the thread count the process happened to have (CPU kernels can depend on it).
    threads = torch.get_num_threads()
    save_dir = Path(project_dir).expanduser().resolve() / name
    args = dict(data=str(data_yaml), seed=seed, device=device, project=str(save_dir.parent), name=name,
                exist_ok=True, deterministic=True, amp=False, val=True, save=False)
    try:
        with _dataset_errors_as_user_errors(), _nan_recovery_as_run_failure():
            yolo.train(**train_args, **args)
    except FileNotFoundError as e:
        # With save=False ultralytics writes last.pt only at the planned final epoch; when patience/time stop the
        # run earlier, YOLO.train() fails *after* training while reloading that file into the YOLO object, which
        # we don't use. The records are complete, so the run is not lost.
        if not (str(e).startswith("Training completed but no checkpoint was saved") and tracker.records
                and tracker.records[-1].last):
            raise
    finally:
        torch.set_num_threads(threads)  # the trainer's select_device() changed it for the whole process
    _check_effective_args(yolo.trainer.args, train_args, "during training")
    _check_recorded_args(save_dir / "args.yaml", train_args)
    return _train_result(tracker)


def _check_effective_args(effective, requested: dict, when: str) -> None:
    """Fail the run when ultralytics is not using a value we passed (and recorded in config.yaml)."""
    for key, wanted in requested.items():
        actual = getattr(effective, key, None)
        if not _same_value(actual, wanted):
            raise RunFailedError(f"ultralytics changed {key} from {wanted!r} to {actual!r} {when}, so the run would "
                                 "not be what config.yaml records; set a value it keeps (e.g. a smaller batch)")


def _check_recorded_args(args_yaml: Path, requested: dict) -> None:
    from src.common.yaml_io import load_yaml

    recorded = load_yaml(args_yaml)
    for key, wanted in requested.items():
        if not _same_value(recorded.get(key), wanted):
            raise RunFailedError(f"ultralytics recorded {key}={recorded.get(key)!r} in {args_yaml}, but street-scene "
                                 f"passed {wanted!r}")


def _same_value(a, b) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@contextlib.contextmanager
def _nan_recovery_as_run_failure():
    # ultralytics' own NaN handling (8.4 `_handle_nan_recovery`) raises these when a fitness goes NaN after the
    # first epoch; the batch and epoch checks above normally fail the run earlier, with a clearer message.
    try:
        yield
    except RuntimeError as e:
        if "NaN" not in str(e) or not str(e).startswith(("Fitness", "Loss", "Training failed", "Checkpoint")):
            raise
        raise RunFailedError(f"ultralytics stopped on non-finite values: {' '.join(str(e).split())}") from e


def _stop_after(epoch: int) -> Callable:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise UserError(f"stop after epoch must be a positive integer, got {epoch!r}")

    def stop(trainer) -> None:
        # The trainer checks `stop` right after on_fit_epoch_end and breaks before the next epoch.
        if trainer.epoch + 1 >= epoch:
            trainer.stop = True

    return stop


def _train_result(tracker: _EpochTracker) -> YoloTrainResult:
    if tracker.best is None:
        raise RuntimeError("ultralytics finished without completing an epoch")
    _, best = tracker.best
    return YoloTrainResult(epochs=list(tracker.records), best_epoch=best.epoch, best_metrics=dict(best.metrics),
                           model_spec=tracker.spec, save_dir=tracker.save_dir,
                           num_threads=tracker.num_threads, determinism=tracker.determinism or {})


def evaluate_yolo(*, model_spec: dict, model_state: dict, data_yaml: Path, split: str, imgsz: int, batch: int,
                  device: str, project_dir: Path, name: str, conf: float = 0.001, iou: float = 0.7,
                  plots: bool = True) -> dict:
    """{"metrics": {<split>/mAP50, /mAP50-95, /precision, /recall}, "per_class": {name: {<split>/AP50-95,
    <split>/AP50}} (None for classes without ground truth in the split), "details": {speed}}."""
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
    return _eval_metrics(metrics, model_spec["names"], split)


def _eval_metrics(metrics, names: list, split: str) -> dict:
    """The evaluation result every task returns: flat `<split>/<metric>` numbers, per-class numbers, details."""
    box = metrics.box
    per_class = {name: {f"{split}/AP50-95": None, f"{split}/AP50": None} for name in names}
    for i, c in enumerate(box.ap_class_index):  # classes with ground truth in this split
        per_class[names[int(c)]] = {f"{split}/AP50-95": float(box.ap[i]), f"{split}/AP50": float(box.ap50[i])}
    return {"metrics": {f"{split}/mAP50": float(box.map50), f"{split}/mAP50-95": float(box.map),
                        f"{split}/precision": float(box.mp), f"{split}/recall": float(box.mr)},
            "per_class": per_class,
            "details": {"speed_ms_per_image": {k: float(v) for k, v in metrics.speed.items()}}}


def check_train_inputs(*, architecture: str, train_args: dict):
    """Everything train_yolo would refuse about its arguments, checked before a run dir exists.

    Returns the YOLO object built from `architecture` for the check: pass it to train_yolo(model=...) so the
    model is not built twice (a fixed cost of ~0.2 s per run for a nano model).
    """
    yolo = _new_yolo(architecture)
    _check_train_args(train_args, yolo)
    return yolo


def _check_train_args(train_args: dict, yolo) -> None:
    """The config schema already checked our keys; this checks them against ultralytics itself."""
    from ultralytics.cfg import DEFAULT_CFG_DICT, check_cfg

    reserved = sorted(set(train_args) & _RESERVED_ARGS)
    if reserved:
        raise UserError(f"ultralytics arguments {reserved} are set by street-scene itself; remove them")
    unknown = sorted(set(train_args) - set(DEFAULT_CFG_DICT))
    if unknown:
        raise UserError(f"ultralytics {_version()} has no training argument {unknown[0]!r}")
    try:
        check_cfg(dict(train_args))  # ultralytics' own type/range checks, before any file is written
    except (TypeError, ValueError) as e:
        raise UserError(f"ultralytics training arguments: {' '.join(str(e).split())}")
    stride = int(max(yolo.model.stride)) if hasattr(yolo.model, "stride") else 32
    if train_args.get("imgsz", 0) % stride:
        raise UserError(f"detection.training.image_size {train_args['imgsz']} is not a multiple of this model's "
                        f"stride {stride}; ultralytics would round it up silently")


def _version() -> str:
    from importlib.metadata import version

    return version("ultralytics")


def _new_yolo(architecture: str):
    """An untrained YOLO for an ultralytics model yaml, whose description passed the allow-list first (ultralytics
    eval()s parts of it)."""
    from src.tasks.detection.weights import build_untrained_yolo

    return build_untrained_yolo(architecture)


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
