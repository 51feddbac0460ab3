"""The `segmentation:` config section: every key, its type, range and default (documented in
configs/segmentation_config.yaml, which a test keeps in step with this file)."""

from typing import Annotated, Dict, List, Literal, Optional

from pydantic import AfterValidator, Field, model_validator

from src.common.config_schema import ClassNames, Fraction, IdentifierKeys, Section, Workers

ARCHITECTURES = ("lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "fcn_resnet50")
OPTIMIZERS = ("sgd", "adamw", "adam")
SCHEDULERS = ("poly", "cosine", "constant")  # stepped once per iteration


def _ordered_pair(values: List[float]) -> List[float]:
    if values[0] > values[1]:
        raise ValueError(f"must be [low, high] with low <= high, got {values}")
    return values


class SegmentationModelSection(Section):
    architecture: Literal[ARCHITECTURES] = "lraspp_mobilenet_v3_large"
    weights: Optional[str] = None


class SegmentationTraining(Section):
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(8, ge=1, le=1024)
    learning_rate: float = Field(0.01, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0001, ge=0.0, le=1.0)
    optimizer: Literal[OPTIMIZERS] = "sgd"
    scheduler: Literal[SCHEDULERS] = "poly"
    crop_size: Annotated[List[Annotated[int, Field(ge=16, le=8192)]], Field(min_length=2, max_length=2)] = \
        Field(default_factory=lambda: [128, 256])
    scale_range: Annotated[List[Annotated[float, Field(gt=0.0, le=10.0)]], Field(min_length=2, max_length=2),
                           AfterValidator(_ordered_pair)] = Field(default_factory=lambda: [0.5, 2.0])
    hflip_prob: Fraction = 0.5
    workers: Workers = 0


class SegmentationEvaluation(Section):
    batch_size: int = Field(4, ge=1, le=1024)


class SegmentationSubtask(Section):
    classes: Annotated[ClassNames, Field(max_length=255)]
    ignore_index: int = Field(255, ge=0, le=255)

    @model_validator(mode="after")
    def _ignore_is_not_a_class(self):
        if self.ignore_index < len(self.classes):
            raise ValueError(f"ignore_index {self.ignore_index} is the id of class {self.classes[self.ignore_index]!r}"
                             f"; use a value >= {len(self.classes)} (255 is usual)")
        return self


class SegmentationSection(Section):
    model: SegmentationModelSection = Field(default_factory=SegmentationModelSection)
    training: SegmentationTraining = Field(default_factory=SegmentationTraining)
    evaluation: SegmentationEvaluation = Field(default_factory=SegmentationEvaluation)
    tasks: Annotated[Dict[str, SegmentationSubtask], IdentifierKeys, Field(min_length=1)]
