"""Reading a task's part of the resolved config, with errors that point at the shipped example config."""

from typing import Any, Dict, List

from src.common.errors import UserError


def section(config: Dict[str, Any], *keys: str) -> Dict[str, Any]:
    """config[k1][k2]... as a mapping; a missing or non-mapping section is a UserError."""
    node: Any = config
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise UserError(f"config is missing the section {'.'.join(keys)}; see configs/{keys[0]}_config.yaml")
    return node


def subtask_names(config: Dict[str, Any], family: str) -> List[str]:
    """The `--<family>-task` choices: the keys of `<family>.tasks`."""
    tasks = (config.get(family) or {}).get("tasks") or {}
    if not isinstance(tasks, dict) or not tasks:
        raise UserError(f"config has no {family}.tasks section; see configs/{family}_config.yaml")
    return list(tasks)
