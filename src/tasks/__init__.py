"""Model tasks (detection, segmentation): the one list of task families.

Each family owns a task adapter module (`prepare_train`, `train`, `prepare_eval`, `evaluate`; see
docs/ARCHITECTURE.md) and the schema of its config section. Its subtasks (vehicle_detection, ...) are not listed
in code anywhere: they are the keys of `<family>.tasks` in the config.
"""

import importlib
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import Any, Dict

from src.common.errors import UserError


@dataclass(frozen=True)
class Family:
    module: str  # the task adapter, imported only when that task runs
    schema: str  # "<module>:<class>" of its config section (pydantic; never imports torch)


TASKS = {
    "detection": Family("src.tasks.detection.task", "src.tasks.detection.schema:DetectionSection"),
    "segmentation": Family("src.tasks.segmentation.task", "src.tasks.segmentation.schema:SegmentationSection"),
}


def check_family(name: str) -> str:
    if name not in TASKS:
        raise UserError(f"unknown --task {name!r}; available: {', '.join(TASKS)}")
    return name


def load_task(name: str) -> ModuleType:
    return importlib.import_module(TASKS[check_family(name)].module)


@lru_cache(maxsize=None)
def config_schema(name: str) -> type:
    """The pydantic model of a whole config file of family `name` (shared sections + its own)."""
    from src.common.config_schema import config_model

    module_name, _, class_name = TASKS[check_family(name)].schema.partition(":")
    return config_model(name, getattr(importlib.import_module(module_name), class_name))


def family_of_config(raw: Dict[str, Any], source: str, task: str = None) -> str:
    """The task family a config file is for: its one top-level family section (checked against `task`)."""
    found = [name for name in TASKS if name in raw]
    if task is not None:
        check_family(task)
        if task not in found and found:
            raise UserError(f"{source} is a {found[0]} config (it has a `{found[0]}:` section) but --task is "
                            f"{task}; use configs/{task}_config.yaml or --task {found[0]}")
        if not found:
            raise UserError(f"{source} has no task section: a --task {task} config needs a `{task}:` section with "
                            f"at least `tasks:`; see configs/{task}_config.yaml")
        if len(found) > 1:
            extra = [name for name in found if name != task]
            raise UserError(f"{source} has a `{extra[0]}:` section, which a --task {task} run does not use; "
                            "keep one task family per config file")
        return task
    if len(found) != 1:
        what = "no task section" if not found else f"sections for {' and '.join(found)}"
        raise UserError(f"{source} has {what}; a config holds exactly one of {', '.join(TASKS)} "
                        "(see configs/detection_config.yaml)")
    return found[0]
