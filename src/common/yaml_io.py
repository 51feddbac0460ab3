"""YAML in and out, safely and predictably.

PyYAML implements YAML 1.1, where `1e-4` (no dot) is a *string*; configs are written by people who expect a
float, so the loader adds the YAML 1.2 float rule; dates stay strings. Duplicate keys are an error instead of
"last one wins"; `<<: *anchor` merges work.
Only the safe loader is used: a config can never construct Python objects. Alias chains ("billion laughs": a
few hundred bytes that expand to millions of nodes) and oversized files are refused before anything is built.
"""

import re
from pathlib import Path
from typing import Any

import yaml

from src.common.errors import UserError

MAX_YAML_BYTES = 16 * 1024 * 1024  # configs, data yamls and run metadata are kilobytes; this is not a data format
# Nodes that aliases may add beyond the ones written out. `<<: *base` merges in a config cost a few dozen; an
# alias bomb needs millions.
ALIAS_EXPANSION_BUDGET = 10_000

_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats and duplicate-key detection."""


_MERGE_TAG = "tag:yaml.org,2002:merge"
# Replaced: YAML 1.1 floats. Dropped: timestamps (`2024-01-01` stays the string the user wrote, which the config
# hash and JSON can represent) and the `=` "value" tag (no constructor exists for it, so `a: =` would not load).
_DROPPED_TAGS = ("tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value")
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag not in _DROPPED_TAGS]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # `<<: *base` is expanded by construct_mapping; keys after it may override merged ones
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            continue  # construct_mapping reports unhashable keys as a YAML error with the line
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that never emits aliases (every run file should read on its own)."""

    def ignore_aliases(self, data):
        return True


_ODD_BREAKS = ("\x85", "\u2028", "\u2029")  # YAML 1.1 line breaks that other styles fold into spaces


def _represent_str(dumper, data):
    style = '"' if any(ch in data for ch in _ODD_BREAKS) else "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


def _union_resolvers(first, second):
    chars = set(first) | set(second)
    return {ch: list(first.get(ch, [])) + [r for r in second.get(ch, []) if r not in first.get(ch, [])]
            for ch in chars}


_Dumper.add_representer(str, _represent_str)
# Quote strings that our loader would read back as something else ("1e-4" is a float here), and also those a
# plain YAML 1.1 reader would (ultralytics reads data.yaml with PyYAML: "2024-01-01" would become a date there).
# Our resolvers come first, so numbers we write are still emitted plain.
_Dumper.yaml_implicit_resolvers = _union_resolvers(_Loader.yaml_implicit_resolvers,
                                                   yaml.SafeLoader.yaml_implicit_resolvers)


def plain_scalar_tag(text: str) -> str:
    """The tag our loader gives `text` as an unquoted scalar, e.g. 'tag:yaml.org,2002:float' for '1e-3'."""
    return _Loader("").resolve(yaml.ScalarNode, text, (True, False))


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text; errors become a one-line UserError naming `source` and the line."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_alias_expansion(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"invalid YAML in {where}: {problem}; fix the file's syntax") from None
    except RecursionError:
        raise UserError(f"invalid YAML in {source}: nested too deeply; a config is a few levels deep") from None
    finally:
        loader.dispose()


def _check_alias_expansion(root, source: str) -> None:
    """Refuse documents whose aliases would expand to more than ALIAS_EXPANSION_BUDGET extra nodes.

    The composed graph shares aliased nodes, so it stays small; the expanded size (what copying, hashing or
    dumping the loaded data walks) is counted with one memoised pass over the distinct nodes.
    """
    sizes = {}
    distinct = 0
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        distinct += 1
        sizes[id(node)] = 1 + sum(sizes.get(id(child), 0) for child in children)
        if sizes[id(node)] - distinct > ALIAS_EXPANSION_BUDGET:
            raise UserError(f"YAML in {source} expands its aliases (*name) to more than {ALIAS_EXPANSION_BUDGET} "
                            "extra values; write the values out instead of chaining aliases")


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load_yaml(path) -> Any:
    """Load a YAML file safely; a missing or unreadable file is a UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"file not found: {path}; check the path")
    if path.is_dir():
        raise UserError(f"expected a YAML file but {path} is a directory")
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise UserError(f"{path} is {size} bytes; YAML files read here are limited to {MAX_YAML_BYTES} bytes "
                            "(is it the right file?)")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc.__class__.__name__}: {exc}") from None
    return parse_yaml(text, str(path))


def dump_yaml(data: Any) -> str:
    """Serialize to block-style YAML that `load_yaml` reads back to the same values."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
