"""Detection task adapter: config -> plain engine arguments, engine epochs -> shared checkpoints and metrics.

Implements src.tasks.contract.Task.
"""

from pathlib import Path
from typing import Any, Dict, List, Optional

from src.common.errors import UserError
from src.common.run_dir import DATA_YAML_FILE, ULTRALYTICS_DIR
from src.tasks.config_sections import section
from src.tasks.contract import EvalOutcome, PreparedData, TrainOutcome
from src.tasks.detection.engine import BEST_METRIC  # what best_model.pth is chosen by
from src.tasks.detection.model_yaml import check_model_spec  # noqa: F401  (part of the task contract)

ACCEPTS_LEGACY_CHECKPOINTS = True  # raw ultralytics .pt files, with --allow-legacy-checkpoint
# ultralytics' own resume restores state we do not checkpoint bit-exactly (its dataloader and EMA schedule):
# a detection run is re-run (`street-scene reproduce`), not resumed.
SUPPORTS_RESUME = False
RESUME_SAFE_KEYS: tuple = ()


def resolve_names(config: Dict[str, Any], subtask: str, data_yaml: Optional[str]) -> List[str]:
    """Class names from --data-yaml, checked against the config's class list for the task."""
    from src.data.data_yaml import class_names

    configured = section(config, "detection", "tasks", subtask).get("classes")
    if data_yaml is None:
        if not configured:
            raise UserError(f"no --data-yaml given and detection.tasks.{subtask}.classes is empty")
        return [str(c) for c in configured]
    names = class_names(data_yaml)
    if configured and list(configured) != names:
        raise UserError(f"class names in {data_yaml} {names} differ from detection.tasks.{subtask}.classes "
                        f"{list(configured)}; use the data yaml of {subtask} or fix the config")
    return names


def _split(spec: Optional[str], role: str, names: List[str]):
    from src.data.detection_data import resolve_split, validate_split

    if not spec:
        raise UserError(f"--{role}-data is required")
    split = resolve_split(spec, role)
    stats = validate_split(split, names)
    return split, stats


def prepare_train(config, subtask, train_data, val_data, data_yaml, device: str = "cpu") -> PreparedData:
    """Validate data and config before the run dir exists; everything returned is plain or in-memory."""
    from src.common.fingerprint import fingerprint_splits

    names = resolve_names(config, subtask, data_yaml)
    args = _training_args(config)
    if args["train_args"]["workers"] and device == "cpu":
        raise UserError(f"detection.training.workers={args['train_args']['workers']} has no effect on CPU (ultralytics "
                        "loads data in the main process there); set it to 0, or train on a GPU")
    train, train_stats = _split(train_data, "train", names)
    val, val_stats = _split(val_data, "val", names)
    yolo = _check_with_ultralytics(args)  # after the cheap data checks: this imports torch and ultralytics
    record = {"train": str(train.source), "val": str(val.source), "train_spec": train_data, "val_spec": val_data,
              "data_yaml": str(Path(data_yaml).resolve()) if data_yaml else None, "names": names,
              "stats": {"train": train_stats, "val": val_stats}}
    fingerprints = fingerprint_splits({"train": train.source, "val": val.source}, names)
    return PreparedData(names=names, record=record, fingerprints=fingerprints, splits={"train": train, "val": val},
                        prebuilt=yolo)


def _check_with_ultralytics(args: Dict[str, Any]):
    """The YOLO object built while checking (train() trains it rather than building a second one)."""
    from src.tasks.detection.engine import check_train_inputs
    from src.tasks.detection.offline import configure_ultralytics, default_config_dir
    from src.tasks.detection.weights import load_pretrained

    configure_ultralytics(default_config_dir())
    if args["weights"] is not None:
        load_pretrained(args["weights"])  # unreadable or foreign weights fail now, not after the run dir exists
    return check_train_inputs(architecture=args["architecture"], train_args=args["train_args"])


def _training_args(config: Dict[str, Any]) -> Dict[str, Any]:
    from src.tasks.detection.schema import ultralytics_train_args

    model = section(config, "detection", "model")
    weights = model["weights"]
    if weights is not None and not Path(weights).expanduser().is_file():
        raise UserError(f"detection.model.weights {weights!r} is not a local file; street-scene never downloads "
                        "weights: give the path of a .pt/.pth file or null")
    return {"architecture": model["architecture"], "train_args": ultralytics_train_args(config),
            "weights": Path(weights).expanduser().resolve() if weights else None}


def total_epochs(config: Dict[str, Any]) -> int:
    return int(section(config, "detection", "training")["epochs"])


def train(ctx) -> TrainOutcome:
    from src.data.detection_data import write_effective_data_yaml
    from src.tasks.detection.engine import train_yolo
    from src.tasks.detection.offline import configure_ultralytics, default_config_dir

    configure_ultralytics(default_config_dir())
    args = _training_args(ctx.config)
    data_yaml = write_effective_data_yaml(ctx.run_dir / DATA_YAML_FILE, ctx.data.splits["train"],
                                          ctx.data.splits["val"], names=ctx.data.names)
    best = {"value": None}

    def on_epoch(record) -> None:
        ctx.log_epoch(record.epoch, record.metrics)
        value = record.metrics[BEST_METRIC]
        is_best = best["value"] is None or value > best["value"]
        if is_best:
            best["value"] = value
        ctx.save_checkpoint(record.epoch, record.model_state, record.model_spec, record.metrics,
                            is_best=is_best, last=record.last)

    result = train_yolo(architecture=args["architecture"], data_yaml=data_yaml, project_dir=ctx.run_dir,
                        name=ULTRALYTICS_DIR, train_args=args["train_args"], seed=ctx.seed, device=ctx.device,
                        weights=args["weights"], on_epoch=on_epoch, stop_after_epoch=ctx.stop_after_epoch,
                        model=ctx.data.take_prebuilt())
    for pickled in (ctx.run_dir / ULTRALYTICS_DIR / "weights").glob("*.pt"):
        pickled.unlink()  # ultralytics' own pickled copies; best_model.pth / checkpoint_epoch_N.pth replace them
    return TrainOutcome(metrics=result_metrics(ctx.history, result.best_epoch),
                        metadata={"determinism_during_training": result.determinism,
                                  "num_threads_during_training": result.num_threads})


def result_metrics(history: List[Dict[str, Any]], best_epoch: int) -> Dict[str, Any]:
    """What the registry records of a finished run, from its metrics.csv rows: the best epoch's validation
    metrics under their own names, plus best_val_metric (= val/mAP50-95), best_epoch and epochs_completed."""
    row = next(r for r in history if r["epoch"] == best_epoch)
    return {"best_val_metric": row[BEST_METRIC], "best_epoch": best_epoch, "epochs_completed": len(history),
            **{k: v for k, v in row.items() if k.startswith("val/") and "loss" not in k}}


def prepare_eval(config, subtask, test_data, data_yaml, ckpt) -> PreparedData:
    model = _model_of(ckpt)
    model["model_spec"] = check_model_spec(model["model_spec"], "checkpoint")  # damaged or hostile: one line now
    names = list(model["model_spec"]["names"])
    if data_yaml is not None:
        from src.data.data_yaml import class_names

        yaml_names = class_names(data_yaml)
        if yaml_names != names:
            raise UserError(f"checkpoint classes {names} differ from the classes in {data_yaml} {yaml_names}; "
                            "evaluate with the data yaml the model was trained with")
    test, stats = _split(test_data, "test", names)
    return PreparedData(names=names, record={"test": str(test.source), "test_spec": test_data, "stats": stats},
                        splits={"test": test}, extras={"model": model})


def before_legacy_load() -> None:
    """A pickled ultralytics .pt imports ultralytics while loading: make that import offline first."""
    from src.tasks.detection.offline import configure_ultralytics, default_config_dir

    configure_ultralytics(default_config_dir())


def _model_of(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """model_state + model_spec, from our checkpoint or (explicitly allowed) a legacy ultralytics .pt."""
    if not ckpt.get("legacy"):
        return {"model_state": ckpt["model_state"], "model_spec": ckpt["model_spec"]}
    from src.tasks.detection.weights import legacy_checkpoint

    return legacy_checkpoint(ckpt["legacy_object"], ckpt["path"])


def evaluate(ctx) -> EvalOutcome:
    from src.data.detection_data import write_effective_data_yaml
    from src.tasks.detection.engine import evaluate_yolo
    from src.tasks.detection.offline import configure_ultralytics, default_config_dir

    configure_ultralytics(default_config_dir())
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    test = ctx.data.splits["test"]
    # ultralytics insists on train/val keys; all point at the test split, evaluated as split="test".
    data_yaml = write_effective_data_yaml(ctx.output_dir / DATA_YAML_FILE, test, test, test, names=ctx.data.names)
    evaluation = section(ctx.config, "detection", "evaluation")
    model = ctx.data.extras["model"]
    found = evaluate_yolo(model_spec=model["model_spec"], model_state=model["model_state"],
                          data_yaml=data_yaml, split="test", imgsz=model["model_spec"]["imgsz"],
                          batch=evaluation["batch_size"], device=ctx.device,
                          project_dir=ctx.output_dir.parent, name=ctx.output_dir.name,
                          conf=evaluation["conf"], iou=evaluation["iou"], plots=evaluation["plots"])
    return EvalOutcome(metrics=found["metrics"], per_class=found["per_class"], details=found["details"])
