"""What every lifecycle (train, evaluate, reproduce, check-determinism) resolves first, once, at the edge:
the validated config, the task family's adapter, the subtask and the device."""

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Optional, Sequence

from src.common.config_manager import ConfigManager
from src.common.errors import UserError


@dataclass(frozen=True)
class Job:
    cm: ConfigManager
    config: Dict[str, Any]  # the resolved, validated config (a copy)
    task: str  # the family: detection / segmentation
    task_module: ModuleType
    subtask: str  # a key of `<task>.tasks` in the config


def open_job(config_path: Path, task: str, subtask: Optional[str], overrides: Sequence[str] = (),
             seed: Optional[int] = None) -> Job:
    """Load and validate the config for `task`, and resolve the subtask; nothing is written, torch not imported."""
    from src.tasks import load_task

    cm = ConfigManager(config_path, overrides, seed, task=task)
    config = cm.get_config()
    return Job(cm=cm, config=config, task=task, task_module=load_task(task),
               subtask=resolve_subtask(config, task, subtask))


def resolve_subtask(config: Dict[str, Any], task: str, subtask: Optional[str]) -> str:
    """`subtask`, checked against `<task>.tasks`; None picks the only one when there is exactly one."""
    known = list(config[task]["tasks"])
    if subtask is None:
        if len(known) == 1:
            return known[0]
        raise UserError(f"--subtask (or --{task}-task) is required; choose one of {', '.join(known)}")
    if subtask not in known:
        raise UserError(f"unknown subtask {subtask!r} for --task {task}; choose one of {', '.join(known)} "
                        f"(defined under {task}.tasks in the config)")
    return subtask


def resolve_device(requested: Any) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; anything else is checked, not guessed."""
    import torch

    name = str(requested if requested is not None else "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"config device {requested!r} asks for CUDA but no GPU is available; set device=cpu")
    if name.startswith("cuda:") and int(name.split(":", 1)[1]) >= torch.cuda.device_count():
        raise UserError(f"config device {requested!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"config device {requested!r} is not one of auto, cpu, cuda, cuda:N")
    return name
