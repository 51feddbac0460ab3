"""The registry file itself: a JSON array of entries, locked, written atomically, never silently replaced.

Writers hold an exclusive `filelock` on `<file>.lock`, re-read the file, change it and replace it atomically
(temp file + fsync + rename), after hard-linking the current good version to `<file>.bak`. Readers take no
lock: the rename means they see the old array or the new one, never half of either. A file that fails
validation raises `RegistryCorruptError` on every read and write and is only ever moved aside by `rebuild`.

The file holds one entry per line inside `[` ... `]`: still the JSON array the user guide documents, but a
writer can re-emit unchanged entries without serializing them again, and `git diff` shows one line per run.
"""

import json
import math
import os
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from src.common.atomic import atomic_write_bytes
from src.common.errors import RegistryCorruptError, UserError

REQUIRED_FIELDS = ("run_id", "task", "config_hash", "checkpoint_path", "metrics", "timestamp", "metadata")
_FIELD_TYPES = {"run_id": str, "task": str, "config_hash": str, "checkpoint_path": str, "metrics": dict,
                "timestamp": str, "metadata": dict}
OPTIONAL_STRING_FIELDS = ("run_dir", "config_path", "status")
MAX_DEPTH = 32  # nesting levels below an entry; real entries use 3
REBUILD_HINT = "street-scene registry rebuild"
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
               type(None): "null"}


class RegistryLockedError(UserError):
    """Another process held the registry lock for longer than the timeout."""


class RegistryStore:
    """One registry file. Keeps the last file it read or wrote in memory, keyed by its exact bytes."""

    def __init__(self, path: Path, lock_timeout: float):
        self.path = path
        self.lock_timeout = lock_timeout
        self._lock = None  # filelock.FileLock, made on first write (keeps import and construction cheap)
        self._mutex = threading.RLock()  # threads sharing one instance share its in-memory copy
        self._raw: Optional[bytes] = None
        self._entries: List[dict] = []
        self._index: Dict[str, int] = {}
        self._lines: Optional[List[str]] = None  # serialized entries, parallel to _entries

    @property
    def backup_path(self) -> Path:
        return self.path.with_name(self.path.name + ".bak")

    # ---- reading -------------------------------------------------------------------------------------------
    def load(self) -> List[dict]:
        """The validated entries (shared with the cache: callers must not mutate them)."""
        with self._mutex:
            raw = self._read_bytes()
            if raw is None:
                self._set_cache(None, [], None)
            elif raw != self._raw:
                self._set_cache(raw, parse_registry(raw, self.path), None)
            return self._entries

    def get(self, run_id: str) -> Optional[dict]:
        with self._mutex:
            entries = self.load()
            i = self._index.get(run_id)
            return None if i is None else entries[i]

    def _read_bytes(self) -> Optional[bytes]:
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UserError(f"cannot read registry {self.path}: {exc.strerror}; check the path and permissions") \
                from None

    def _set_cache(self, raw: Optional[bytes], entries: List[dict], lines: Optional[List[str]],
                   index: Optional[Dict[str, int]] = None) -> None:
        self._raw, self._entries, self._lines = raw, entries, lines
        self._index = index if index is not None else {e["run_id"]: i for i, e in enumerate(entries)}

    # ---- writing -------------------------------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the registry's file lock (reentrant within this process)."""
        from filelock import FileLock

        if self._lock is None:
            # preserve_lock_file: unlinking a lock file others may be waiting on is a classic flock race.
            self._lock = FileLock(str(self.path) + ".lock", timeout=self.lock_timeout, preserve_lock_file=True)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # the registry's own folder: ours to create
        except OSError as exc:
            raise UserError(f"cannot create the registry folder {self.path.parent}: {exc.strerror}; pass --registry "
                            f"(or set STREET_SCENE_REGISTRY) to a file in a writable folder") from None
        with self._mutex:
            with self._file_lock():
                self._remove_stale_temp_files()
                yield

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            raise RegistryLockedError(
                f"registry {self.path} is locked by another process (lock {self.path}.lock) for more than "
                f"{self.lock_timeout:g}s; retry, or look for a hung street-scene process"
            ) from None
        try:
            yield
        finally:
            self._lock.release()

    def _remove_stale_temp_files(self) -> None:
        # Temp files are only made while holding the lock, so any we find now belong to a killed writer.
        for tmp in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass

    def upsert(self, entries: List[dict]) -> None:
        """Add entries, replacing (in place) any with the same run_id; the last of equal run_ids wins."""
        with self.locked():
            self.load()
            ids = [e["run_id"] for e in entries]
            if self._raw is not None and len(set(ids)) == len(ids) and not any(i in self._index for i in ids):
                self._append(entries)
                return
            lines = list(self._serialized_lines())
            new = list(self._entries)
            index = dict(self._index)
            for entry in entries:
                i = index.get(entry["run_id"])
                if i is None:
                    index[entry["run_id"]] = len(new)
                    new.append(entry)
                    lines.append(dump_entry(entry))
                else:
                    new[i], lines[i] = entry, dump_entry(entry)
            self._write(new, lines)

    def _append(self, entries: List[dict]) -> None:
        # The common case (a new run): splice the new lines in before the closing bracket of the bytes we just
        # validated, instead of re-joining 10,000 lines. Valid for any JSON array layout, not just ours.
        added = [dump_entry(e) for e in entries]
        raw = self._raw
        end = raw.rindex(b"]")
        while end > 0 and raw[end - 1] in b" \t\r\n":
            end -= 1
        sep = b"\n  " if raw[end - 1:end] == b"[" else b",\n  "
        data = b"".join((memoryview(raw)[:end], sep, ",\n  ".join(added).encode("utf-8"), b"\n]\n"))
        index = dict(self._index)
        index.update((e["run_id"], len(self._entries) + k) for k, e in enumerate(entries))
        lines = None if self._lines is None else self._lines + added
        self._commit(data, self._entries + list(entries), lines, index)

    def remove(self, run_id: str) -> bool:
        with self.locked():
            self.load()
            i = self._index.get(run_id)
            if i is None:
                return False
            lines = list(self._serialized_lines())
            self._write(self._entries[:i] + self._entries[i + 1:], lines[:i] + lines[i + 1:])
            return True

    def replace_all(self, entries: List[dict], stamp: str) -> Optional[Path]:
        """Replace the whole registry; a corrupt file is first moved aside (returned), never deleted."""
        with self.locked():
            moved = None
            try:
                self.load()
            except RegistryCorruptError:
                moved = self._move_aside(stamp)
                self._set_cache(None, [], None)
            self._write(list(entries), [dump_entry(e) for e in entries])
            return moved

    def _serialized_lines(self) -> List[str]:
        if self._lines is None:
            self._lines = [dump_entry(e) for e in self._entries]
        return self._lines

    def _write(self, entries: List[dict], lines: List[str]) -> None:
        data = ("[\n  " + ",\n  ".join(lines) + "\n]\n" if lines else "[]\n").encode("utf-8")
        self._commit(data, entries, lines, None)

    def _commit(self, data: bytes, entries: List[dict], lines: Optional[List[str]], index) -> None:
        if self._raw is not None:
            self._backup_current()
        atomic_write_bytes(self.path, data)
        self._set_cache(data, entries, lines, index)

    def _backup_current(self) -> None:
        # The file was just validated under the lock, so it is the previous *good* version. A hard link costs
        # nothing and is safe because the registry is only ever replaced by rename, never written in place.
        tmp = self.path.with_name(f".{self.backup_path.name}.{os.getpid()}.tmp")
        try:
            if tmp.exists():
                tmp.unlink()
            os.link(self.path, tmp)
            os.replace(tmp, self.backup_path)
        except OSError:  # no hard links on this filesystem: copy the bytes we hold instead
            atomic_write_bytes(self.backup_path, self._raw)

    def _move_aside(self, stamp: str) -> Path:
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        os.replace(self.path, target)
        return target


class _Invalid(Exception):
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
    except (OSError, _Invalid):
        return False
    return True


def parse_registry(raw: bytes, path: Path) -> List[dict]:
    """Decode and validate a registry file; any problem is a RegistryCorruptError naming the file."""
    try:
        return decode_registry(raw)
    except _Invalid as exc:
        raise corrupt_error(path, str(exc)) from None


def _reject_constant(name: str):
    # Python's json accepts NaN/Infinity; we never write them (allow_nan=False), so finding one means the file
    # was edited or damaged, and re-writing it would fail half-way through a user's command.
    raise ValueError(f"non-standard JSON constant {name}")


def decode_registry(raw: bytes) -> List[dict]:
    """The entries of registry bytes; raises _Invalid (never anything else) when they are not a valid registry."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise _Invalid(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise _Invalid(f"invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise _Invalid("invalid JSON (nested too deeply)") from None
    except ValueError as exc:  # NaN/Infinity (_reject_constant), an integer too long to convert
        reason = "a number with too many digits" if "integer string conversion" in str(exc) else str(exc)
        raise _Invalid(f"invalid JSON ({_short(reason, 120)})") from None
    if not isinstance(data, list):
        raise _Invalid(f"expected a JSON array of entries, found a JSON {_json_type(data)}")
    seen = set()
    for i, entry in enumerate(data):
        problem = entry_problem(entry)
        if problem is None and entry["run_id"] in seen:
            problem = "duplicate run_id"
        if problem:
            rid = entry.get("run_id") if isinstance(entry, dict) else None
            raise _Invalid(f"entry {i}{f' ({_short(repr(rid), 60)})' if isinstance(rid, str) else ''}: {problem}")
        seen.add(entry["run_id"])
    return data


def entry_problem(entry: object) -> Optional[str]:
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
    return value_problem(entry)


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


def dump_entry(entry: dict) -> str:
    return json.dumps(entry, ensure_ascii=False, allow_nan=False)
