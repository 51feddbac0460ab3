"""The `toy:` config section."""

from typing import Annotated, Dict

from pydantic import Field

from src.common.config_schema import ClassNames, IdentifierKeys, Section


class ToyTraining(Section):
    epochs: int = Field(3, ge=1, le=100)
    learning_rate: float = Field(0.1, gt=0.0, le=1.0)


class ToySubtask(Section):
    classes: ClassNames


class ToySection(Section):
    training: ToyTraining = Field(default_factory=ToyTraining)
    tasks: Annotated[Dict[str, ToySubtask], IdentifierKeys, Field(min_length=1)]
