"""Segmentation task adapter: config -> plain engine arguments, engine epochs -> shared checkpoints and metrics.

Implements src.tasks.contract.Task.
"""

import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from src.common.errors import UserError
from src.common.report import note
from src.tasks.config_sections import section
from src.tasks.contract import EvalOutcome, PreparedData, TrainOutcome

BEST_METRIC = "val/mIoU"
ACCEPTS_LEGACY_CHECKPOINTS = False  # only street-scene checkpoints: there is no other segmentation format to read
SUPPORTS_RESUME = True
# Keys that may differ between a checkpoint's config and the config of a resumed run: where and how fast the
# run executes, never what it computes.
RESUME_SAFE_KEYS = ("device", "checkpoint.save_every", "checkpoint.keep_last", "segmentation.training.workers",
                    "segmentation.evaluation.batch_size")


def resolve_classes(config: Dict[str, Any], subtask: str, data_yaml: Optional[str]):
    """(names, ignore_index) from --data-yaml, checked against segmentation.tasks.<subtask>."""
    from src.data.segmentation_data import load_segmentation_yaml

    task_cfg = section(config, "segmentation", "tasks", subtask)
    configured, ignore = task_cfg["classes"], task_cfg["ignore_index"]
    if data_yaml is None:
        return [str(c) for c in configured], int(ignore)
    names, yaml_ignore = load_segmentation_yaml(data_yaml)
    if list(configured) != names:
        raise UserError(f"class names in {data_yaml} {names} differ from segmentation.tasks.{subtask}.classes "
                        f"{list(configured)}; use the data yaml of {subtask} or fix the config")
    if yaml_ignore != ignore:
        raise UserError(f"ignore_index {yaml_ignore} in {data_yaml} differs from segmentation.tasks.{subtask}."
                        f"ignore_index {ignore}")
    return names, ignore


def _split(spec: Optional[str], role: str, names: List[str], ignore_index: int):
    from src.data.segmentation_data import resolve_segmentation_split, validate_segmentation_split

    if not spec:
        raise UserError(f"--{role}-data is required")
    split = resolve_segmentation_split(spec, role)
    stats = validate_segmentation_split(split, len(names), ignore_index)
    return split, stats


def _items(split) -> list:
    return list(zip(split.images, split.masks))


def _settings(config: Dict[str, Any]):
    from src.tasks.segmentation.engine import TrainSettings

    t = section(config, "segmentation", "training")
    return TrainSettings(epochs=t["epochs"], batch_size=t["batch_size"], lr=t["learning_rate"],
                         weight_decay=t["weight_decay"], optimizer=t["optimizer"], scheduler=t["scheduler"],
                         crop_size=tuple(t["crop_size"]), workers=t["workers"], scale_range=tuple(t["scale_range"]),
                         hflip_prob=t["hflip_prob"],
                         eval_batch_size=section(config, "segmentation", "evaluation")["batch_size"])


def _model_spec(config: Dict[str, Any], names: List[str], ignore_index: int) -> Dict[str, Any]:
    from src.tasks.segmentation.transforms import IMAGENET_MEAN, IMAGENET_STD

    # The input the model was trained on, so that a checkpoint can be used without reading our source:
    # RGB values scaled by `scale`, then (x - mean) / std per channel (transforms.py applies exactly these).
    preprocessing = {"color": "RGB", "scale": 1 / 255, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return {"architecture": section(config, "segmentation", "model")["architecture"], "names": names,
            "num_classes": len(names), "ignore_index": ignore_index, "preprocessing": preprocessing}


def _weights(config: Dict[str, Any]) -> Optional[Path]:
    weights = section(config, "segmentation", "model")["weights"]
    if weights is None:
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(f"segmentation.model.weights {weights!r} is not a local file; street-scene never "
                        "downloads weights: give the path of a weights file or null")
    return path.resolve()


def total_epochs(config: Dict[str, Any]) -> int:
    """Epochs the config trains for (resume uses it to refuse continuing a run that already finished)."""
    return int(section(config, "segmentation", "training")["epochs"])


def prepare_train(config, subtask, train_data, val_data, data_yaml, device: str = "cpu") -> PreparedData:
    from src.common.fingerprint import fingerprint_splits

    names, ignore = resolve_classes(config, subtask, data_yaml)
    weights = _weights(config)
    if weights is not None:  # unreadable or mismatching weights fail now, before the run dir exists
        from src.tasks.segmentation.models import build_model

        build_model(_model_spec(config, names, ignore)["architecture"], len(names), weights)
    train, train_stats = _split(train_data, "train", names, ignore)
    val, val_stats = _split(val_data, "val", names, ignore)
    record = {"train": str(train.root), "val": str(val.root), "train_spec": train_data, "val_spec": val_data,
              "data_yaml": str(Path(data_yaml).resolve()) if data_yaml else None, "names": names,
              "ignore_index": ignore, "stats": {"train": train_stats, "val": val_stats}}
    fingerprints = fingerprint_splits({"train": train.root, "val": val.root}, names)
    return PreparedData(names=names, record=record, fingerprints=fingerprints, splits={"train": train, "val": val},
                        extras={"ignore_index": ignore})


def train(ctx) -> TrainOutcome:
    from src.tasks.segmentation.engine import train_segmentation
    from src.tasks.segmentation.models import build_model

    names, ignore = ctx.data.names, ctx.data.extras["ignore_index"]
    spec = _model_spec(ctx.config, names, ignore)
    settings = _settings(ctx.config)
    model = build_model(spec["architecture"], len(names), _weights(ctx.config))
    resume_state = None
    if ctx.resume is not None:
        resume_state = {**ctx.resume["train_state"], "model_state": ctx.resume["model_state"]}
    best = {"value": ctx.resume["train_state"].get("best_metric") if ctx.resume else None}

    def on_epoch(epoch: int, metrics: Dict[str, Any], get_train_state) -> None:
        ctx.log_epoch(epoch, metrics)
        note(_epoch_line(epoch, settings.epochs, metrics))  # the run's train.log records progress
        value = metrics.get(BEST_METRIC)
        is_best = value is not None and value == value and (best["value"] is None or value > best["value"])
        if is_best:
            best["value"] = value
        last = epoch == settings.epochs or epoch == ctx.stop_after_epoch
        if not ctx.should_save(epoch, is_best, last):
            return
        state = get_train_state()
        model_state = state.pop("model_state")  # stored once, at the checkpoint's top level
        ctx.save_checkpoint(epoch, model_state, spec, metrics, is_best=is_best, last=last, train_state=state)

    result = train_segmentation(model=model, train_items=_items(ctx.data.splits["train"]),
                                val_items=_items(ctx.data.splits["val"]), num_classes=len(names), ignore_index=ignore,
                                seed=ctx.seed, device=ctx.device, on_epoch=on_epoch, resume_state=resume_state,
                                class_names=names, stop_after=ctx.stop_after_epoch, settings=settings)
    # The loop's own history (every process has it, resumed epochs included), under metrics.csv's names.
    history = [{"epoch": i + 1, **row} for i, row in enumerate(result["history"])]
    return TrainOutcome(metrics=result_metrics(history, result["best_epoch"]),
                        metadata={"determinism_during_training": result["determinism"],
                                  "world_size": result["world_size"]})


def result_metrics(history: List[Dict[str, Any]], best_epoch: int) -> Dict[str, Any]:
    """What the registry records of a finished run, from its metrics.csv rows: the best epoch's val/loss,
    val/mIoU and val/pixel_accuracy, plus best_val_metric (= val/mIoU), best_epoch and epochs_completed."""
    row = next(r for r in history if r["epoch"] == best_epoch)
    return {"best_val_metric": row[BEST_METRIC], "best_epoch": best_epoch, "epochs_completed": len(history),
            **{k: v for k, v in row.items() if k.startswith("val/") and "IoU_" not in k}}


def _epoch_line(epoch: int, epochs: int, metrics: Dict[str, Any]) -> str:
    shown = ("train/loss", "val/loss", BEST_METRIC, "val/pixel_accuracy")
    return f"epoch {epoch}/{epochs}: " + " ".join(f"{k}={metrics[k]:.4f}" for k in shown if k in metrics)


def check_model_spec(spec: Any, where: str) -> Dict[str, Any]:
    """A segmentation model_spec: known architecture, class names matching num_classes, a valid ignore index."""
    from src.tasks.segmentation.schema import ARCHITECTURES

    ok = (isinstance(spec, dict) and spec.get("architecture") in ARCHITECTURES
          and isinstance(spec.get("names"), list) and all(isinstance(n, str) for n in spec["names"])
          and type(spec.get("num_classes")) is int and spec["num_classes"] == len(spec["names"]) > 0
          and type(spec.get("ignore_index")) is int and 0 <= spec["ignore_index"] <= 255
          and ("preprocessing" not in spec or _valid_preprocessing(spec["preprocessing"])))  # older: ImageNet
    if not ok:
        raise UserError(f"{where}: model_spec is not a segmentation model description (architecture one of "
                        f"{', '.join(ARCHITECTURES)}, names, num_classes, ignore_index); the checkpoint is damaged")
    return spec


def before_legacy_load() -> None:
    """Never called: ACCEPTS_LEGACY_CHECKPOINTS is False, so evaluation refuses the flag first."""


def _valid_preprocessing(pre: Any) -> bool:
    def numbers(values, count):
        return (isinstance(values, list) and len(values) == count
                and all(type(v) in (int, float) and math.isfinite(v) for v in values))

    return (isinstance(pre, dict) and pre.get("color") == "RGB" and numbers([pre.get("scale")], 1)
            and numbers(pre.get("mean"), 3) and numbers(pre.get("std"), 3) and all(v > 0 for v in pre["std"]))


def prepare_eval(config, subtask, test_data, data_yaml, ckpt) -> PreparedData:
    spec = check_model_spec(ckpt["model_spec"], "checkpoint")
    names, ignore = list(spec["names"]), int(spec["ignore_index"])
    if data_yaml is not None:
        yaml_names, yaml_ignore = resolve_classes(config, subtask, data_yaml)
        if yaml_names != names:
            raise UserError(f"checkpoint classes {names} differ from the classes in {data_yaml} {yaml_names}")
    test, stats = _split(test_data, "test", names, ignore)
    return PreparedData(names=names, record={"test": str(test.root), "test_spec": test_data, "stats": stats},
                        splits={"test": test}, extras={"ignore_index": ignore})


def evaluate(ctx) -> EvalOutcome:
    from src.tasks.segmentation.engine import evaluate_segmentation
    from src.tasks.segmentation.models import build_model

    spec = ctx.checkpoint["model_spec"]
    model = build_model(spec["architecture"], int(spec["num_classes"]), None)
    model.load_state_dict(ctx.checkpoint["model_state"])
    batch = section(ctx.config, "segmentation", "evaluation")["batch_size"]
    split = "test"
    flat = evaluate_segmentation(model=model, items=_items(ctx.data.splits["test"]),
                                 num_classes=int(spec["num_classes"]),
                                 ignore_index=int(spec["ignore_index"]), batch_size=batch, device=ctx.device,
                                 class_names=list(spec["names"]), prefix=f"{split}/")
    per_class = {name: {f"{split}/IoU": flat.pop(f"{split}/IoU_{name}")} for name in spec["names"]}
    return EvalOutcome(metrics=flat, per_class=per_class)
