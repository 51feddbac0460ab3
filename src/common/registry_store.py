"""The registry file itself: a JSON array of entries, locked, written atomically, never silently replaced.

Writers hold an exclusive `filelock` on `<file>.lock`, build the new file beside the old one and rename it into
place (temp file + fsync + rename), after hard-linking the current good version to `<file>.bak`. Readers take no
lock: the rename means they see the old array or the new one, never half of either. A file that fails
validation raises `RegistryCorruptError` on every read and write and is only ever moved aside by `rebuild`.

The file holds one entry per line inside `[` ... `]`. A sidecar index (registry_index.py) records where each
entry lies and answers queries; while it vouches for the file, a writer copies the unchanged bytes in the
kernel and only serializes the entries it adds or replaces, and a reader reads only the entries it returns.
Whenever it does not vouch for the file, the whole file is parsed and validated, as before, and the index is
rebuilt from it.
"""

import os
import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

from src.common.errors import RegistryCorruptError, UserError
from src.common.registry_format import (InvalidRegistry, best_entry, copy_json, corrupt_error, decode_with_spans,
                                        metric_value, metrics_line)
from src.common.registry_index import (INEXACT, Identity, Index, IndexUnusable, clock_floor_ns, identity_of,
                                       mtime_stamp, open_index, readers_seal, stat_key)
from src.common.registry_splice import (FileChanged, IndexedFile, ParsedFile, Splice, append_plan, read_all,
                                        read_entries, remove_plan, replace_plan, trusted_entries, trusted_list,
                                        whole_plan, write_all)

SUMMARY_FIELDS = ("run_id", "task", "status", "timestamp", "config_hash", "metrics_line", "metrics")
_READ_WAIT = 2.0  # seconds a reader waits for a writer's index commit before reading the JSON instead


class RegistryLockedError(UserError):
    """Another process held the registry lock for longer than the timeout."""


class RegistryStore:
    """One registry file and its index. Keeps the last file it read in full in memory, keyed by its bytes."""

    def __init__(self, path: Path, lock_timeout: float):
        self.path = path
        self.lock_timeout = lock_timeout
        self._lock = None  # filelock.FileLock, made on first write (keeps import and construction cheap)
        self._mutex = threading.RLock()  # threads sharing one instance share its in-memory copy
        self._parsed: Optional[ParsedFile] = None

    @property
    def backup_path(self) -> Path:
        return self.path.with_name(self.path.name + ".bak")

    # ---- reading: the index when it vouches for the file, else the validated file -----------------------------
    def entries(self) -> List[dict]:
        """Every entry, in order (the caller's to keep: never shared with the cache)."""
        return self._read(lambda view: view.all_entries(), lambda entries: [copy_json(e) for e in entries])

    def count(self) -> int:
        return self._read(lambda view: view.index.count(), len)

    def get(self, run_id: str) -> Optional[dict]:
        return self._read(lambda view: next(iter(view.where("run_id", run_id)), None),
                          lambda entries: next((copy_json(e) for e in entries if e["run_id"] == run_id), None))

    def where(self, field: str, value: str) -> List[dict]:
        """Entries whose `task` or `config_hash` is `value`."""
        return self._read(lambda view: view.where(field, value),
                          lambda entries: [copy_json(e) for e in entries if e[field] == value])

    def summaries(self, task: Optional[str], metrics: bool = True) -> List[dict]:
        """SUMMARY_FIELDS of every entry (of `task`), `metrics` left out unless asked for: what a table of runs
        shows, read from the index alone (decoding 10,000 metrics objects is a third of a `registry list`)."""
        fields = SUMMARY_FIELDS if metrics else SUMMARY_FIELDS[:-1]

        def fast(view):
            rows = view.index.summaries(task, metrics)
            if metrics:
                values = trusted_list("[" + ",".join(r[6] for r in rows) + "]", len(rows))
                rows = [(*r[:6], m) for r, m in zip(rows, values)]
            return [dict(zip(fields, r)) for r in rows]

        def slow(entries):  # the index's row, from the entry (zip leaves `metrics` out when not asked for)
            return [dict(zip(fields, (e["run_id"], e["task"], e.get("status"), e["timestamp"], e["config_hash"],
                                      metrics_line(e["metrics"]), copy_json(e["metrics"]))))
                    for e in entries if task is None or e["task"] == task]

        return self._read(fast, slow)

    def best(self, task: str, metric: str, mode: str) -> Optional[dict]:
        def fast(view):
            hit = view.index.best(task, metric, mode)
            if hit is INEXACT:
                return best_entry(view.where("task", task), task, metric, mode)
            if hit is None:
                return None
            entry = read_entries(view.fd, [hit[:3]], view.size)[0]
            if metric_value(entry, metric) != hit[3]:
                raise IndexUnusable("the best entry does not read back with its indexed value")
            return entry

        def slow(entries):
            found = best_entry(entries, task, metric, mode)
            return None if found is None else copy_json(found)

        return self._read(fast, slow)

    def _read(self, fast, slow):
        with self._mutex:
            clock = clock_floor_ns()  # before the file is looked at: what a reader may seal against
            try:
                f = open(self.path, "rb", buffering=0)
            except FileNotFoundError:
                return slow([])
            except OSError as exc:
                raise _unreadable(self.path, exc) from None
            with f:
                ident = identity_of(f.fileno())
                trusted = False
                try:
                    with open_index(self.path, write=False, timeout=_READ_WAIT) as index:
                        trusted = index is not None and index.trusts(ident)
                        if trusted:
                            return fast(_View(f.fileno(), ident.size, index, self))
                except IndexUnusable:  # it vouched for the file but does not read back: rebuild it
                    pass
                return slow(self._validated(f.fileno(), ident, clock, reindex=trusted).entries())

    def _validated(self, fd: int, ident: Identity, clock: int, reindex: bool = False) -> ParsedFile:
        raw = read_all(fd)
        if self._parsed is None or self._parsed.raw != raw:
            try:
                self._parsed = ParsedFile(raw, *decode_with_spans(raw))
            except InvalidRegistry as exc:
                raise corrupt_error(self.path, str(exc)) from None
        parsed = self._parsed
        if parsed.can_splice and readers_seal(ident, identity_of(fd), clock):
            self._index_quietly(ident, parsed, reindex)
        return parsed

    def _index_quietly(self, ident: Identity, parsed: ParsedFile, reindex: bool) -> None:
        # Best effort: another process may be writing the index (we do not wait) or the folder be read-only.
        try:
            with open_index(self.path, write=True, timeout=0.05) as index:
                if index is None or (index.trusts(ident) and not reindex) or _path_key(self.path) != ident.stat:
                    return  # already done, or the file was replaced meanwhile: never index a stale version
                index.rebuild(parsed.entries(), parsed.spans)
                index.set_identity(ident, True, parsed.body_end, parsed.count)
        except (IndexUnusable, OSError):
            pass

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
        ids = [e["run_id"] for e in entries]

        def plan(base) -> Optional[Splice]:
            if len(set(ids)) == len(ids) and not base.present(ids):
                return append_plan(base, entries)
            if len(entries) == 1:
                return replace_plan(base, base.locate(ids[0]), entries[0])
            return None

        def merge(current: List[dict]) -> List[dict]:
            merged = {e["run_id"]: e for e in current}
            merged.update((e["run_id"], e) for e in entries)  # an existing run_id keeps its place
            return list(merged.values())

        self._write(plan, merge)

    def remove(self, run_id: str) -> bool:
        def plan(base):
            loc = base.locate(run_id)
            if loc is None:
                return False
            return None if base.count == 1 else remove_plan(base, loc, run_id)

        def without(current: List[dict]) -> Optional[List[dict]]:
            kept = [e for e in current if e["run_id"] != run_id]
            return None if len(kept) == len(current) else kept

        return self._write(plan, without)

    def replace_all(self, entries: List[dict], stamp: str) -> Optional[Path]:
        """Replace the whole registry; a corrupt file is first moved aside (returned), never deleted."""
        with self.locked():
            moved = None
            try:
                self._write(lambda base: None, lambda current: list(entries))
            except RegistryCorruptError:
                moved = self._move_aside(stamp)
                self._write(lambda base: None, lambda current: list(entries))
            return moved

    def _write(self, plan, full) -> bool:
        with self.locked():
            try:
                return self._write_once(plan, full, use_index=True)
            except (FileChanged, IndexUnusable):  # raised before anything was written: do it from the JSON
                return self._write_once(plan, full, use_index=False)

    def _write_once(self, plan, full, use_index: bool) -> bool:
        try:
            f = open(self.path, "rb", buffering=0)
        except FileNotFoundError:
            f = None
        except OSError as exc:
            raise _unreadable(self.path, exc) from None
        with ExitStack() as stack:
            if f is not None:
                stack.enter_context(f)
            index = stack.enter_context(_maybe_index(self.path, use_index))
            base = self._base(f, index)
            splice = plan(base) if base is not None and base.can_splice else None
            if splice is None:
                entries = full(base.entries() if base is not None else [])
                splice = False if entries is None else whole_plan(entries, base)
            if splice is False:
                return False
            self._commit(base, splice, index)
            return True

    def _base(self, f, index):
        if f is None:
            return None
        ident = identity_of(f.fileno())
        if index is not None and index.trusts(ident):
            return IndexedFile(f.fileno(), ident, index, self.path)
        raw = read_all(f.fileno())
        if self._parsed is not None and self._parsed.raw == raw and self._parsed.can_splice:
            return self._parsed
        try:
            return ParsedFile(raw, *decode_with_spans(raw))
        except InvalidRegistry as exc:
            raise corrupt_error(self.path, str(exc)) from None

    def _commit(self, base, splice: Splice, index: Optional[Index]) -> None:
        held = {}

        def write(f) -> None:
            out = f.fileno()
            if base is not None:
                base.copy_to(out, 0, splice.start)
            write_all(out, splice.insert)
            if base is not None:
                base.copy_to(out, splice.end, base.size - splice.end)
                base.check_unchanged()
            if os.utime in os.supports_fd:  # else no stamp: the index stays unsealed and readers parse
                held["stamp"] = mtime_stamp()  # after the last write: any later write stamps a later time
                os.utime(out, ns=(held["stamp"], held["stamp"]))
            held["fd"] = os.dup(out)
            if base is not None:
                self._backup_current(base)

        from src.common.atomic import atomic_write_with  # tempfile: only writers need it

        try:
            atomic_write_with(self.path, write)
            ident = identity_of(held["fd"])
            sealed = ident.mtime_ns == held.get("stamp") and _path_key(self.path) == ident.stat
        finally:
            if "fd" in held:
                os.close(held["fd"])
        self._parsed = None
        if index is None:
            return
        try:  # the JSON is written; from here a failure only leaves the index stale (then rebuilt)
            if isinstance(base, ParsedFile) and not splice.whole:  # index the old file, then update it
                index.rebuild(base.entries(), base.spans)
            splice.update(index)
            index.set_identity(ident, sealed, splice.body_end, splice.count)
        except IndexUnusable:
            pass

    def _backup_current(self, base) -> None:
        # The file was validated (or vouched for by the index) under the lock, so it is the previous *good*
        # version. A hard link costs nothing and is safe because the registry is only ever replaced by rename.
        tmp = self.path.with_name(f".{self.backup_path.name}.{os.getpid()}.tmp")
        try:
            if tmp.exists():
                tmp.unlink()
            os.link(self.path, tmp)
            os.replace(tmp, self.backup_path)
        except OSError:  # no hard links on this filesystem: copy the bytes instead
            from src.common.atomic import atomic_write_with

            def copy(f):
                base.copy_to(f.fileno(), 0, base.size)

            atomic_write_with(self.backup_path, copy)

    def _move_aside(self, stamp: str) -> Path:
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        os.replace(self.path, target)
        return target


class _View:
    """A reader's trusted view: the open file and the index that vouches for it."""

    def __init__(self, fd: int, size: int, index: Index, store: RegistryStore):
        self.fd, self.size, self.index, self._store = fd, size, index, store

    def where(self, column: str, value: str) -> List[dict]:
        return read_entries(self.fd, self.index.spans(column, value), self.size)

    def all_entries(self) -> List[dict]:
        raw = read_all(self.fd)
        cached = self._store._parsed
        if cached is None or cached.raw != raw:
            cached = self._store._parsed = ParsedFile(raw, trusted_entries(raw, self.index.count()), None, None)
        return [copy_json(e) for e in cached.entries()]


def _path_key(path: Path) -> Optional[str]:
    try:
        return stat_key(os.stat(path))
    except OSError:
        return None


@contextmanager
def _maybe_index(path: Path, use: bool):
    if not use:
        yield None
        return
    with open_index(path, write=True, timeout=60.0) as index:
        yield index


def _unreadable(path: Path, exc: OSError) -> UserError:
    return UserError(f"cannot read registry {path}: {exc.strerror}; check the path and permissions")
