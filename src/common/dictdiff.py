"""Nested dicts as dotted keys, and their differences (`a.b.c: old -> new`)."""

import math
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
        if not same_value(va, vb):
            changes.append((key, va, vb))
    return changes


def same_value(a: Any, b: Any) -> bool:
    """Equal as the config hash sees it: 1 == 1.0 and NaN == NaN (a metric NaN in both runs did not change), but
    True != 1. The one equality rule of config diffs, run diffs, reproductions and determinism checks."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if is_number(a) and is_number(b):
        return a == b or (a != a and b != b)  # a != a only for NaN
    return type(a) is type(b) and a == b


def close(a: Any, b: Any, rtol: float, atol: float) -> bool:
    """same_value, except that two finite numbers only need to be within `rtol`/`atol` of each other."""
    if is_number(a) and is_number(b) and a == a and b == b:
        return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
    return same_value(a, b)


def is_number(value: Any) -> bool:
    """int or float, not bool (NaN and inf included)."""
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
