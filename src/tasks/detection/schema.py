"""The `detection:` config section: every key, its type, range and default (documented in
configs/detection_config.yaml, which a test keeps in step with this file).

Our keys map onto ultralytics train arguments (see `ULTRALYTICS_NAMES`); other ultralytics train arguments that
change how a detector is trained may be set under `detection.training.ultralytics` (`EXTRA_ARGS`). Everything
else ultralytics accepts is refused: street-scene sets it itself, it has no effect on detection training, or it
would break a promise (downloads, writes into the dataset, time-based stopping).
"""

import math
from typing import Annotated, Any, Dict, Literal, Optional

from pydantic import AfterValidator, Field

from src.common.config_schema import ClassNames, Fraction, IdentifierKeys, Section, Workers

OPTIMIZERS = ("SGD", "MuSGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSprop")  # ultralytics' spellings


def _yaml_name(value: str) -> str:
    if not value.lower().endswith((".yaml", ".yml")):
        raise ValueError(f"must be an ultralytics model yaml such as yolov8n.yaml or a path to one, got {value!r}; "
                         "pretrained weights go in detection.model.weights")
    return value


def _stride_multiple(value: int) -> int:
    if value % 32:
        raise ValueError(f"must be a multiple of 32 (ultralytics would silently round {value} up to "
                         f"{math.ceil(value / 32) * 32}), got {value}")
    return value


class DetectionModelSection(Section):
    architecture: Annotated[str, AfterValidator(_yaml_name)] = "yolov8n.yaml"
    weights: Optional[str] = None


class DetectionAugmentation(Section):
    """ultralytics' augmentation hyperparameters for detection, under their ultralytics names."""

    mosaic: Fraction = 1.0
    close_mosaic: int = Field(3, ge=0, le=10_000)
    fliplr: Fraction = 0.5
    flipud: Fraction = 0.0
    scale: float = Field(0.5, ge=0.0, le=1.0)
    translate: Fraction = 0.1
    degrees: float = Field(0.0, ge=0.0, le=180.0)
    shear: float = Field(0.0, ge=0.0, le=180.0)
    perspective: float = Field(0.0, ge=0.0, le=0.001)
    hsv_h: Fraction = 0.015
    hsv_s: Fraction = 0.7
    hsv_v: Fraction = 0.4
    bgr: Fraction = 0.0
    mixup: Fraction = 0.0
    cutmix: Fraction = 0.0


def _non_negative(value: Any) -> bool:
    return _finite_number(value) and value >= 0


def _fraction(value: Any) -> bool:
    return _finite_number(value) and 0 <= value <= 1


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _freeze(value: Any) -> bool:
    items = value if isinstance(value, list) else [value]
    return bool(items) and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1000 for v in items)


# Extra ultralytics train arguments a detection run may set: name -> (check, what it must be).
EXTRA_ARGS = {
    "box": (_non_negative, "a number >= 0 (box loss gain)"),
    "cls": (_non_negative, "a number >= 0 (classification loss gain)"),
    "dfl": (_non_negative, "a number >= 0 (distribution focal loss gain)"),
    "cls_pw": (_fraction, "a number in [0, 1] (class-weight power)"),
    "nbs": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096,
            "an integer in [1, 4096] (nominal batch size)"),
    "warmup_momentum": (_fraction, "a number in [0, 1]"),
    "warmup_bias_lr": (_fraction, "a number in [0, 1]"),
    "cos_lr": (lambda v: isinstance(v, bool), "true or false"),
    "rect": (lambda v: isinstance(v, bool), "true or false"),
    "fraction": (lambda v: _finite_number(v) and 0 < v <= 1, "a number in (0, 1] (share of the training set)"),
    "freeze": (_freeze, "a layer count or a list of layer indices (integers >= 0)"),
    "multi_scale": (_fraction, "a number in [0, 1] (image size range as a fraction of image_size)"),
    "max_det": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 10_000,
                "an integer in [1, 10000]"),
}
# ultralytics train arguments that are our own keys under another name.
ULTRALYTICS_NAMES = {
    "epochs": "detection.training.epochs", "batch": "detection.training.batch_size",
    "lr0": "detection.training.learning_rate", "lrf": "detection.training.final_lr_factor",
    "imgsz": "detection.training.image_size", "optimizer": "detection.training.optimizer",
    "momentum": "detection.training.momentum", "weight_decay": "detection.training.weight_decay",
    "warmup_epochs": "detection.training.warmup_epochs", "patience": "detection.training.patience",
    "workers": "detection.training.workers", "plots": "detection.training.plots",
    **{k: f"detection.training.augmentation.{k}" for k in DetectionAugmentation.model_fields},
    "seed": "seed (or --seed)", "device": "device",
}


def _extra_args(args: Dict[str, Any]) -> Dict[str, Any]:
    for key, value in args.items():
        if key in ULTRALYTICS_NAMES:
            raise ValueError(f"{key} is set by street-scene from {ULTRALYTICS_NAMES[key]}; set that key instead")
        if key not in EXTRA_ARGS:
            raise ValueError(f"{key} is not an ultralytics training argument street-scene forwards for detection "
                             f"(allowed: {', '.join(sorted(EXTRA_ARGS))})")
        check, meaning = EXTRA_ARGS[key]
        if not check(value):
            raise ValueError(f"{key} must be {meaning}, got {value!r}")
    return args


class DetectionTraining(Section):
    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(16, ge=1, le=1024)
    learning_rate: float = Field(0.01, gt=0.0, le=1.0)
    final_lr_factor: float = Field(0.01, gt=0.0, le=1.0)
    image_size: Annotated[int, Field(ge=64, le=4096), AfterValidator(_stride_multiple)] = 320
    optimizer: Literal[OPTIMIZERS] = "SGD"
    momentum: float = Field(0.937, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0005, ge=0.0, le=1.0)
    warmup_epochs: float = Field(1.0, ge=0.0, le=1000.0)
    patience: int = Field(100, ge=0, le=100_000)
    workers: Workers = 0
    plots: bool = True
    augmentation: DetectionAugmentation = Field(default_factory=DetectionAugmentation)
    ultralytics: Annotated[Dict[str, Any], IdentifierKeys, AfterValidator(_extra_args)] = Field(default_factory=dict)

    @classmethod
    def unknown_key_hint(cls, key: str) -> str:
        if key in DetectionAugmentation.model_fields:
            return f"augmentation settings live under detection.training.augmentation.{key}"
        if key in ULTRALYTICS_NAMES:
            return f"ultralytics' {key} is {ULTRALYTICS_NAMES[key]}"
        return ("other ultralytics training arguments go under detection.training.ultralytics, e.g. "
                f"--config-override +detection.training.ultralytics.{key}=...")


class DetectionEvaluation(Section):
    batch_size: int = Field(16, ge=1, le=1024)
    conf: float = Field(0.001, ge=0.0, lt=1.0)
    iou: float = Field(0.7, gt=0.0, le=1.0)
    plots: bool = True


class DetectionSubtask(Section):
    classes: ClassNames


class DetectionSection(Section):
    model: DetectionModelSection = Field(default_factory=DetectionModelSection)
    training: DetectionTraining = Field(default_factory=DetectionTraining)
    evaluation: DetectionEvaluation = Field(default_factory=DetectionEvaluation)
    tasks: Annotated[Dict[str, DetectionSubtask], IdentifierKeys, Field(min_length=1)]


def ultralytics_train_args(config: Dict[str, Any]) -> Dict[str, Any]:
    """The ultralytics train arguments a validated config asks for (without data, device, seed and paths)."""
    training = config["detection"]["training"]
    return {
        "epochs": training["epochs"], "batch": training["batch_size"], "imgsz": training["image_size"],
        "lr0": training["learning_rate"], "lrf": training["final_lr_factor"], "optimizer": training["optimizer"],
        "momentum": training["momentum"], "weight_decay": training["weight_decay"],
        "warmup_epochs": training["warmup_epochs"], "patience": training["patience"],
        "workers": training["workers"], "plots": training["plots"], **training["augmentation"],
        **training["ultralytics"],
    }

