"""What a valid registry file is: a JSON array of entries, each checked field by field.

`decode_registry` is the whole contract; `decode_with_spans` accepts exactly the same files and also says where
each entry's text lies in the file (what the sidecar index records so that one entry can be read back alone).
Any problem is `InvalidRegistry`; `corrupt_error` turns it into the one-line RegistryCorruptError users see.
"""

import gc
import json
import math
import re
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import List, Optional, Tuple

from src.common.errors import RegistryCorruptError

REQUIRED_FIELDS = ("run_id", "task", "config_hash", "checkpoint_path", "metrics", "timestamp", "metadata")
_FIELD_TYPES = {"run_id": str, "task": str, "config_hash": str, "checkpoint_path": str, "metrics": dict,
                "timestamp": str, "metadata": dict}
OPTIONAL_STRING_FIELDS = ("run_dir", "config_path", "status")
MAX_DEPTH = 32  # nesting levels below an entry; real entries use 3
REBUILD_HINT = "street-scene registry rebuild"
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
               type(None): "null"}
_WS = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, exactly what the json module skips
Span = Tuple[int, int]  # (byte offset, byte length) of one entry's JSON text


class InvalidRegistry(Exception):
    """Why registry bytes are not a valid registry (becomes a RegistryCorruptError naming the file)."""


def corrupt_error(path: Path, reason: str) -> RegistryCorruptError:
    backup = path.with_name(path.name + ".bak")
    also = f" (the last good version is {backup})" if _is_valid_registry_file(backup) else ""
    reason = " ".join(reason.split())  # one line, whatever the decoder said
    return RegistryCorruptError(
        f"registry {path} is corrupt: {reason}; it was left untouched. Run `{REBUILD_HINT}` to move it aside "
        f"and rebuild it from the run directories{also}"
    )


def _is_valid_registry_file(path: Path) -> bool:
    # Only a .bak that itself parses may be offered as "the last good version".
    try:
        with open(path, "rb") as f:
            decode_registry(f.read())
    except (OSError, InvalidRegistry):
        return False
    return True


def parse_registry(raw: bytes, path: Path) -> List[dict]:
    """Decode and validate a registry file; any problem is a RegistryCorruptError naming the file."""
    try:
        return decode_registry(raw)
    except InvalidRegistry as exc:
        raise corrupt_error(path, str(exc)) from None


def _reject_constant(name: str):
    # Python's json accepts NaN/Infinity; we never write them (allow_nan=False), so finding one means the file
    # was edited or damaged, and re-writing it would fail half-way through a user's command.
    raise ValueError(f"non-standard JSON constant {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if value - value != 0:  # a literal like 1e999 overflows to inf
        raise ValueError(f"non-finite number {value!r}")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_SCANNER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


@contextmanager
def _gc_paused():
    # Decoding a registry builds ~10 containers per entry; the cyclic GC would walk all of them again and again.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def loads_trusted(text: str):
    """Decode JSON text that was validated before (NaN/Infinity still refused: the file may have changed)."""
    with _gc_paused():
        return _DECODER.decode(text)


def decode_registry(raw: bytes) -> List[dict]:
    """The entries of registry bytes; raises InvalidRegistry (never anything else) when they are not valid."""
    try:
        with _gc_paused():
            data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise InvalidRegistry(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InvalidRegistry(f"invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise InvalidRegistry("invalid JSON (nested too deeply)") from None
    except ValueError as exc:  # NaN/Infinity (_reject_constant), an integer too long to convert
        reason = "a number with too many digits" if "integer string conversion" in str(exc) else str(exc)
        raise InvalidRegistry(f"invalid JSON ({_short(reason, 120)})") from None
    if not isinstance(data, list):
        raise InvalidRegistry(f"expected a JSON array of entries, found a JSON {_json_type(data)}")
    check_entries(data)
    return data


def decode_with_spans(raw: bytes) -> Tuple[List[dict], Optional[List[Span]], Optional[int]]:
    """(entries, spans, body_end) of registry bytes, accepting and refusing exactly what `decode_registry` does.

    spans[i] is where entry i's JSON text lies; body_end is the offset just after the last entry (after the
    `[` of an empty array): what follows it is only whitespace, `]` and whitespace. Entries are decoded one by
    one with the same decoder; anything unexpected is handed to `decode_registry`, whose message is the one
    users get. (spans, body_end) are None in the one case where it accepts what this scanner did not.

    The values of an entry need no walk (value_problem) when the text proves them storable: the scanner refuses
    floats that overflow, an entry with at most MAX_DEPTH brackets cannot nest deeper, and a file without a
    \\uD... escape cannot hold an unpaired surrogate (UTF-8 itself cannot encode one).
    """
    try:
        text = raw.decode("utf-8")
        with _gc_paused():
            entries, char_spans, body_end = _scan_array(text)
    except (UnicodeDecodeError, ValueError, RecursionError, IndexError):
        return decode_registry(raw), None, None  # raises InvalidRegistry with the canonical reason
    if b"\\ud" in raw or b"\\uD" in raw:
        check_entries(entries)
    else:
        check_entries(entries, [text.count("{", s, e) + text.count("[", s, e) > MAX_DEPTH for s, e in char_spans])
    if len(text) == len(raw):  # ASCII: characters are bytes
        return entries, [(s, e - s) for s, e in char_spans], body_end
    return entries, *_byte_spans(text, char_spans, body_end)


def _scan_array(text: str):
    i = _WS.match(text, 0).end()
    if text[i] != "[":
        raise ValueError("not an array")
    i = _WS.match(text, i + 1).end()
    entries, spans, body_end = [], [], i
    if text[i] == "]":
        body_end = text.index("[") + 1
    else:
        while True:
            entry, end = _SCANNER.raw_decode(text, i)
            entries.append(entry)
            spans.append((i, end))
            i = _WS.match(text, end).end()
            if text[i] == "]":
                body_end = end
                break
            if text[i] != ",":
                raise ValueError("expected ',' or ']'")
            i = _WS.match(text, i + 1).end()
    if _WS.match(text, i + 1).end() != len(text):
        raise ValueError("extra data")
    return entries, spans, body_end


def _byte_spans(text: str, char_spans, body_end: int):
    spans, byte, char = [], 0, 0
    for start, end in char_spans:
        byte += len(text[char:start].encode("utf-8"))
        length = len(text[start:end].encode("utf-8"))
        spans.append((byte, length))
        byte, char = byte + length, end
    return spans, byte + len(text[char:body_end].encode("utf-8"))


def check_entries(data: list, walk_values=None) -> None:
    """Every entry's problems (walk_values[i] False: its values are known to be storable) and duplicates."""
    seen = set()
    for i, entry in enumerate(data):
        problem = entry_problem(entry, walk_values is None or walk_values[i])
        if problem is None and entry["run_id"] in seen:
            problem = "duplicate run_id"
        if problem:
            rid = entry.get("run_id") if isinstance(entry, dict) else None
            raise InvalidRegistry(f"entry {i}{f' ({_short(repr(rid), 60)})' if isinstance(rid, str) else ''}: "
                                  f"{problem}")
        seen.add(entry["run_id"])


def entry_problem(entry: object, walk_values: bool = True) -> Optional[str]:
    """Why a stored entry is unusable, or None."""
    if not isinstance(entry, dict):
        return f"expected an object, found {_json_type(entry)}"
    for field in REQUIRED_FIELDS:
        if field not in entry:
            return f"missing field {field!r}"
        if not isinstance(entry[field], _FIELD_TYPES[field]):
            expected = _JSON_TYPES[_FIELD_TYPES[field]]
            return f"field {field!r} must be a JSON {expected}, found {_json_type(entry[field])}"
    for field in OPTIONAL_STRING_FIELDS:  # paths and states that commands open or print
        if entry.get(field) is not None and not isinstance(entry[field], str):
            return f"field {field!r} must be a string or null, found {_json_type(entry[field])}"
    if not entry["run_id"]:
        return "empty run_id"
    try:
        datetime.fromisoformat(entry["timestamp"])
    except ValueError:
        return f"timestamp {_short(repr(entry['timestamp']), 60)} is not ISO 8601"
    return value_problem(entry) if walk_values else None


def value_problem(value: object, depth: int = 0) -> Optional[str]:
    """Why a decoded JSON value cannot be stored again as it is, or None.

    Nesting is bounded so that copying and re-serializing an entry can never hit the recursion limit; floats
    must be finite (a literal like 1e999 decodes to inf even though NaN/Infinity are refused); strings must be
    encodable (a lone surrogate escape such as \\ud800 decodes but cannot be written back as UTF-8).
    Scalars are checked inline, not by a call each: this runs over every value of a 10,000-entry registry.
    """
    if type(value) is not dict and type(value) is not list:
        return _scalar_problem(value)
    if depth >= MAX_DEPTH:
        return f"values nested more than {MAX_DEPTH} levels deep"
    if type(value) is dict:
        if not all(map(str.isascii, value)):  # keys; JSON keys are always strings
            problem = next((p for p in map(_scalar_problem, value) if p), None)
            if problem:
                return problem
        value = value.values()
    for item in value:
        kind = type(item)
        if kind is dict or kind is list:
            problem = value_problem(item, depth + 1)
        elif kind is float:
            problem = None if item - item == 0 else f"non-finite number {item!r}"  # inf - inf and NaN are NaN
        elif kind is str:
            problem = None if item.isascii() else _scalar_problem(item)
        else:
            continue
        if problem:
            return problem
    return None


def _scalar_problem(value: object) -> Optional[str]:
    if type(value) is float and not math.isfinite(value):
        return f"non-finite number {value!r}"
    if type(value) is str and not value.isascii() and not _encodable(value):
        return "a string with an unpaired surrogate"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dump_entry(entry: dict) -> bytes:
    """One entry as it is written: one line of UTF-8 JSON."""
    return json.dumps(entry, ensure_ascii=False, allow_nan=False).encode("utf-8")


def metrics_line(metrics: dict, limit: int = 60) -> str:
    """An entry's metrics as one `name=value` line cut to `limit` characters: the METRICS column of
    `registry list`, kept in the index (change it, bump the index's SCHEMA_VERSION)."""
    text = ""
    for k, v in metrics.items():  # only as much as shows: a table of 10,000 runs formats every row
        text += f" {k}=" if text else f"{k}="
        if len(text) > limit:  # cut off before the value: no need to format it
            return text[: limit - 3] + "..."
        text += format_value(v)
        if len(text) > limit:
            return text[: limit - 3] + "..."
    return text


def format_value(value) -> str:
    """A metric value as tables show it: 4 significant digits for floats, `-` for a missing one."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def metric_value(entry: dict, name: str):
    """The entry's metric `name` if it can rank (an int or a finite float, never a bool), else None."""
    value = entry["metrics"].get(name)
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return value  # ints are always finite (math.isfinite would overflow on a 400-digit one)
    return None


def best_entry(entries, task: str, name: str, mode: str) -> Optional[dict]:
    """The entry of `task` with the highest (`max`) or lowest (`min`) usable metric `name`; ties go to the earliest
    timestamp, then the smallest run_id, so the answer depends only on the entries, not their order."""
    sign = 1 if mode == "max" else -1
    best_value, tied = None, []
    for e in entries:
        if e["task"] != task:
            continue
        value = metric_value(e, name)
        if value is None:
            continue
        value *= sign
        if best_value is None or value > best_value:
            best_value, tied = value, [e]
        elif value == best_value:
            tied.append(e)
    return min(tied, key=lambda e: (e["timestamp"], e["run_id"])) if tied else None


def copy_json(value):
    """Deep copy of plain JSON data (much faster than copy.deepcopy)."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value
