"""Which source class becomes which of our classes: a format's default table for a subtask, updated by --map.

A mapping is `{source class name: our class name, or None to drop}`. A source class that is not in it is dropped
too (and counted by name). `--map MAP.yaml` holds entries of the same shape; each one replaces the default entry
for that source class, so a map file only needs the lines that differ from the default.
"""

import difflib
from pathlib import Path

from src.common.errors import UserError


def load_map_file(path) -> dict:
    """{source class: our class or None} from a YAML mapping, read with the safe loader."""
    from src.common.yaml_io import load_yaml

    data = load_yaml(Path(path))
    if not isinstance(data, dict) or not data:
        raise UserError(f"--map {path} must be a non-empty YAML mapping of `source class: our class` lines "
                        "(null drops a class), got " + (type(data).__name__ if data is not None else "an empty file"))
    for source, target in data.items():
        if not isinstance(source, str):
            raise UserError(f"--map {path}: key {source!r} is not a class name; quote it (e.g. '{source}': ...), "
                            "the keys are the source dataset's class names")
        if target is not None and not isinstance(target, str):
            raise UserError(f"--map {path}: {source!r} maps to {target!r}; map each source class to one of our "
                            "class names, or to null to drop it")
    return data


def resolve_mapping(fmt: str, subtask: str, classes: list[str], default: dict | None, overrides: dict | None,
                    map_file=None, source_classes=None) -> dict:
    """The mapping to convert with: `default` updated by `overrides`, every target checked against `classes`.

    `source_classes` (when the format has a fixed set, e.g. Cityscapes) also checks the keys of `overrides`."""
    if default is None and overrides is None:
        raise UserError(f"{fmt} has no default class mapping for {subtask}; pass --map MAP.yaml with one "
                        f"`source class: our class` line per class ({subtask}'s classes: {', '.join(classes)})")
    if source_classes is not None:
        for source in overrides or {}:
            if source not in source_classes:
                close = difflib.get_close_matches(source, source_classes, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UserError(f"--map {map_file}: {source!r} is not a {fmt} class{hint}; the {fmt} classes are "
                                f"{', '.join(source_classes)}")
    mapping = {**(default or {}), **(overrides or {})}
    for source, target in mapping.items():
        if target is not None and target not in classes:
            origin = f"--map {map_file}" if overrides and source in overrides else f"the default {fmt} mapping"
            close = difflib.get_close_matches(target, classes, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(f"{origin} maps {source!r} to {target!r}, which is not a class of {subtask} "
                            f"({', '.join(classes)}); {hint}map it to one of those, or to null to drop it"
                            + ("" if origin.startswith("--map") else " (in a --map file)"))
    return mapping


def unused_entries(mapping_overrides: dict | None, seen: set) -> list[str]:
    """--map keys that never occurred in the source: most likely a typo."""
    return sorted(k for k in (mapping_overrides or {}) if k not in seen)
