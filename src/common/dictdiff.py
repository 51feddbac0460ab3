"""Nested dicts as dotted keys, and their differences (`a.b.c: old -> new`)."""

from typing import Any, Dict, List, Tuple

MISSING = "<missing>"


def flatten(data: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}. Lists are leaves; an empty dict is kept as a leaf."""
    flat: Dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def diff_dicts(old: Dict[str, Any], new: Dict[str, Any]) -> List[Tuple[str, Any, Any]]:
    """Sorted (dotted key, old value, new value) for every leaf that differs; MISSING marks absence."""
    a, b = flatten(old), flatten(new)
    changes = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, MISSING), b.get(key, MISSING)
        if not _same(va, vb):
            changes.append((key, va, vb))
    return changes


def _same(a: Any, b: Any) -> bool:
    """Equal as the config hash sees it: 1 == 1.0 and NaN == NaN, but True != 1."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if _is_number(a) and _is_number(b):
        return a == b or (a != a and b != b)  # a != a only for NaN
    return type(a) is type(b) and a == b


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_changes(changes: List[Tuple[str, Any, Any]]) -> List[str]:
    return [f"{key}: {_fmt(old)} -> {_fmt(new)}" for key, old, new in changes]


def _fmt(value: Any) -> str:
    if value is MISSING:
        return MISSING
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
