"""Reading a task's part of the resolved config, with errors that point at the shipped example config."""

from typing import Any, Dict

from src.common.errors import UserError


def section(config: Dict[str, Any], *keys: str) -> Dict[str, Any]:
    """config[k1][k2]... as a mapping; a missing or non-mapping section is a UserError."""
    node: Any = config
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise UserError(f"config is missing the section {'.'.join(keys)}; see configs/{keys[0]}_config.yaml")
    return node
