"""Model tasks (detection, segmentation): each knows only how to train and evaluate its model.

A task module provides `prepare_train`, `train`, `prepare_eval` and `evaluate` (docs/ARCHITECTURE.md);
everything around them (run dir, metadata, checkpoints, registry, config checks) is shared.
"""

import importlib
from types import ModuleType

from src.common.errors import UserError

# The module that owns each `--task` choice; imported only when that task runs.
TASKS = {
    "detection": "src.tasks.detection.task",
    "segmentation": "src.tasks.segmentation.task",
}


def load_task(name: str) -> ModuleType:
    if name not in TASKS:
        raise UserError(f"unknown --task {name!r}; available: {', '.join(sorted(TASKS))}")
    return importlib.import_module(TASKS[name])
