"""The registry's sidecar index, `<registry file>.index`: an SQLite file (stdlib) that answers count, lookup,
by-task and best-of queries without reading the JSON array. It is a cache: the JSON file stays the source of
truth, and the index may be deleted at any time (the next access rebuilds it).

An index describes one exact version of the JSON file, named by its identity: device, inode, size, mtime_ns,
ctime_ns and its first and last bytes. It is trusted only when that identity is the file's identity now *and*
the index is sealed: sealed means any later change to that file must change its identity, so an unchanged
identity proves unchanged bytes, which were fully validated when the index was built. Two ways to seal:
- our writer stamps each new file's mtime with a value just below the kernel's file-time clock before
  renaming it into place; a later write to that file can only get a later mtime. The stamp is checked after
  the rename (a filesystem that rounds timestamps loses it, and the index stays unsealed);
- a reader that validated a file seals its index only if the file's mtime is older than the clock at which it
  started reading (as git does for "racily clean" files) and the identity did not change while it read.
Anything else (a file edited in place, a restored backup, another boot, a schema change, an SQLite error, an
entry that does not read back as indexed) makes callers fall back to parsing and validating the JSON.

It lives beside the registry, not under $STREET_SCENE_CACHE: every user and process of one registry shares it,
its timestamps come from the same filesystem clock as the registry's, and it goes away with the registry.
SQLite runs with synchronous=OFF: a killed process cannot break its transactions (the journal is rolled back);
an OS crash could, so the index records the boot id and is not trusted after a reboot.
"""

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple

from src.common.registry_format import metrics_line

SCHEMA_VERSION = 3  # 3: entries.metrics_line
_EDGE = 64  # bytes of the file's head and tail kept in the identity
_EXACT = 2 ** 53  # larger ints do not compare exactly with floats in SQLite: such metrics are ranked in Python
_COARSE_CLOCK = 5  # Linux CLOCK_REALTIME_COARSE: the clock the kernel stamps files with (or below it)
INEXACT = object()  # best(): this metric has a value SQLite cannot rank exactly; ask the JSON instead

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL,
    boot TEXT NOT NULL, ident TEXT NOT NULL, edges BLOB NOT NULL, sealed INTEGER NOT NULL,
    body_end INTEGER NOT NULL, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entries (pos INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, task TEXT NOT NULL,
    config_hash TEXT NOT NULL, timestamp TEXT NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
    status TEXT, metrics TEXT NOT NULL, metrics_line TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS entries_by_task ON entries (task, pos);
CREATE INDEX IF NOT EXISTS entries_by_config ON entries (config_hash, pos);
CREATE TABLE IF NOT EXISTS metric_keys (id INTEGER PRIMARY KEY, task TEXT NOT NULL, name TEXT NOT NULL,
    inexact INTEGER NOT NULL DEFAULT 0, UNIQUE (task, name));
CREATE TABLE IF NOT EXISTS metrics (key INTEGER NOT NULL, value NOT NULL, pos INTEGER NOT NULL,
    PRIMARY KEY (key, value, pos)) WITHOUT ROWID;
"""
_TABLES = ("meta", "entries", "metric_keys", "metrics")


class IndexUnusable(Exception):
    """The index cannot answer (SQLite error, busy, or it disagrees with the file): use the JSON."""


class Identity(NamedTuple):
    stat: str  # "dev:ino:size:mtime_ns:ctime_ns"
    edges: bytes
    size: int
    mtime_ns: int
    inode: Tuple[int, int]  # (dev, ino)


class Loc(NamedTuple):
    """Where one entry lies: its position (registration order) and byte span, and its neighbours' edges."""

    pos: int
    offset: int
    length: int
    prev_end: Optional[int]  # end of the entry before it
    next_offset: Optional[int]  # start of the entry after it


def index_path(registry: Path) -> Path:
    return registry.with_name(registry.name + ".index")


def identity_of(fd: int) -> Identity:
    st = os.fstat(fd)
    edges = os.pread(fd, _EDGE, 0) + os.pread(fd, _EDGE, max(0, st.st_size - _EDGE))
    return Identity(stat_key(st), edges, st.st_size, st.st_mtime_ns, (st.st_dev, st.st_ino))


def stat_key(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def clock_floor_ns() -> int:
    """A time no file timestamp the kernel assigns from now on can be below."""
    try:
        return time.clock_gettime_ns(_COARSE_CLOCK)
    except (AttributeError, OSError):  # not Linux: stay well below the fine clock
        return time.time_ns() - 1_000_000_000


def mtime_stamp() -> int:
    """The mtime our writer gives a new registry file: below any time a later write could be stamped with,
    and not a round number (a filesystem that rounds timestamps would then visibly lose it)."""
    stamp = clock_floor_ns() - 1
    return stamp - 1 if stamp % 1000 == 0 else stamp


def readers_seal(before: Identity, after: Identity, clock_at_start: int) -> bool:
    """Whether a reader that validated the file between these identities may seal an index of it: the file was
    last written before the reader started (so a later write gets a later mtime), in a filesystem whose times
    are finer than a millisecond (a whole-millisecond mtime, 1 in 10^6 otherwise, suggests rounding)."""
    m = before.mtime_ns
    return before == after and m < clock_at_start and m % 1_000_000 != 0 and m <= time.time_ns()


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read().decode("ascii", "replace").strip()
    except OSError:
        return ""


@contextmanager
def open_index(registry: Path, *, write: bool, timeout: float) -> Iterator[Optional["Index"]]:
    """One transaction on the registry's index (None when it cannot be opened). Writes commit at the end."""
    path = index_path(registry)
    if not write and not path.exists():
        yield None
        return
    boot = _boot_id()
    conn = _begin(path, write, timeout, boot)
    if conn is None:
        yield None
        return
    index = Index(conn, boot)
    try:
        try:
            yield index
        except BaseException:
            _quietly(conn.rollback)
            raise
        try:
            conn.rollback() if index.broken else conn.commit()
        except sqlite3.Error:
            _quietly(conn.rollback)
    finally:
        conn.close()
        if write and index.damaged:
            _remove(path)  # not a database any more: the next writer starts a new one


def _begin(path: Path, write: bool, timeout: float, boot: str):
    for attempt in (1, 2):
        conn = None
        try:
            conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA synchronous={'OFF' if boot else 'FULL'}")
            conn.execute("PRAGMA cache_size=-65536")  # a rebuild's pages stay in memory until the commit
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            if write:
                _ensure_schema(conn)
            return conn
        except sqlite3.OperationalError:  # busy, read-only, cannot open: not ours to repair
            pass
        except sqlite3.DatabaseError:  # not a database, malformed: a cache may be thrown away and rebuilt
            if write and attempt == 1:
                if conn is not None:
                    conn.close()
                _remove(path)
                continue
        if conn is not None:
            conn.close()
        return None
    return None


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-journal")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            return


def _quietly(call) -> None:
    try:
        call()
    except sqlite3.Error:
        pass


def _ensure_schema(conn) -> None:
    try:
        row = conn.execute("SELECT version FROM meta").fetchone()
    except sqlite3.OperationalError:  # a new file (or not ours): start clean
        row = None
    if row is not None and row[0] == SCHEMA_VERSION:
        return
    for table in _TABLES:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    for statement in filter(str.strip, _SCHEMA.split(";")):  # executescript() would commit our transaction
        conn.execute(statement)


class Index:
    """Queries and updates of one open index transaction; every SQLite failure is IndexUnusable."""

    def __init__(self, conn, boot: str):
        self._conn = conn
        self._boot = boot
        self.broken = False  # a statement failed: the transaction is rolled back, never committed
        self.damaged = False  # SQLite says the file is not a sound database

    def _q(self, sql: str, args: Sequence = ()) -> list:
        try:
            return self._conn.execute(sql, args).fetchall()
        except (sqlite3.Error, OverflowError) as exc:
            raise self._failed(exc) from None

    def _many(self, sql: str, rows) -> None:
        try:
            self._conn.executemany(sql, rows)
        except (sqlite3.Error, OverflowError) as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: Exception) -> IndexUnusable:
        self.broken = True
        self.damaged = isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)
        return IndexUnusable(str(exc))

    # ---- trust ----------------------------------------------------------------------------------------------
    def _meta(self) -> Optional[tuple]:
        try:
            rows = self._conn.execute("SELECT version, boot, ident, edges, sealed, body_end, count FROM meta") \
                .fetchall()
        except sqlite3.Error:
            return None
        return rows[0] if rows else None

    def trusts(self, ident: Identity) -> bool:
        meta = self._meta()
        return meta is not None and tuple(meta[:5]) == (SCHEMA_VERSION, self._boot, ident.stat, ident.edges, 1)

    def body_end(self) -> int:
        return self._q("SELECT body_end FROM meta")[0][0]

    def count(self) -> int:
        return self._q("SELECT count FROM meta")[0][0]

    def set_identity(self, ident: Identity, sealed: bool, body_end: int, count: int) -> None:
        self._q("INSERT OR REPLACE INTO meta VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                (SCHEMA_VERSION, self._boot, ident.stat, ident.edges, int(sealed), body_end, count))

    # ---- queries --------------------------------------------------------------------------------------------
    def locate(self, run_id: str) -> Optional[Loc]:
        rows = self._q("SELECT pos, offset, length FROM entries WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        pos, offset, length = rows[0]
        prev = self._q("SELECT offset + length FROM entries WHERE pos < ? ORDER BY pos DESC LIMIT 1", (pos,))
        nxt = self._q("SELECT offset FROM entries WHERE pos > ? ORDER BY pos LIMIT 1", (pos,))
        return Loc(pos, offset, length, prev[0][0] if prev else None, nxt[0][0] if nxt else None)

    def present(self, run_ids: Sequence[str]) -> bool:
        return any(self._q("SELECT 1 FROM entries WHERE run_id = ?", (r,)) for r in run_ids)

    def max_pos(self) -> int:
        return self._q("SELECT coalesce(max(pos), -1) FROM entries")[0][0]

    def spans(self, column: str, value: str) -> List[Tuple[str, int, int]]:
        """(run_id, offset, length) of the entries whose `column` is `value`, in registration order."""
        assert column in ("run_id", "task", "config_hash")
        return self._q(f"SELECT run_id, offset, length FROM entries WHERE {column} = ? ORDER BY pos", (value,))

    def summaries(self, task: Optional[str], metrics: bool) -> List[tuple]:
        """(run_id, task, status, timestamp, config_hash, metrics line[, metrics JSON]) of every entry (of `task`),
        in order."""
        extra = ", metrics" if metrics else ""
        columns = f"SELECT run_id, task, status, timestamp, config_hash, metrics_line{extra} FROM entries"
        if task is None:
            return self._q(columns + " ORDER BY pos")
        return self._q(columns + " WHERE task = ? ORDER BY pos", (task,))

    def best(self, task: str, name: str, mode: str):
        """(run_id, offset, length, value) of the best entry, None when no entry ranks, or INEXACT."""
        key = self._q("SELECT id, inexact FROM metric_keys WHERE task = ? AND name = ?", (task, name))
        if not key:
            return None
        if key[0][1]:
            return INEXACT
        order = "DESC" if mode == "max" else "ASC"
        top = self._q(f"SELECT value FROM metrics WHERE key = ? ORDER BY value {order} LIMIT 1", (key[0][0],))
        if not top:
            return None
        rows = self._q("SELECT e.run_id, e.offset, e.length, m.value FROM metrics m JOIN entries e ON e.pos = m.pos "
                       "WHERE m.key = ? AND m.value = ? ORDER BY e.timestamp, e.run_id LIMIT 1",
                       (key[0][0], top[0][0]))
        return rows[0] if rows else None

    # ---- updates --------------------------------------------------------------------------------------------
    def rebuild(self, entries: List[dict], spans: List[Tuple[int, int]]) -> None:
        """Replace every row with these entries (meta is set separately, by set_identity)."""
        for table in ("entries", "metric_keys", "metrics"):
            self._q(f"DELETE FROM {table}")
        self.add(list(enumerate(entries)), spans)

    def add(self, positioned: List[Tuple[int, dict]], spans: List[Tuple[int, int]]) -> None:
        dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
        self._many("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   [(pos, e["run_id"], e["task"], e["config_hash"], e["timestamp"], off, length, e.get("status"),
                     dumps(e["metrics"]), metrics_line(e["metrics"]))
                    for (pos, e), (off, length) in zip(positioned, spans)])
        self._many("INSERT OR IGNORE INTO metrics VALUES (?, ?, ?)", self._metric_rows(positioned))

    def drop(self, pos: int, entry: dict) -> None:
        """Remove the rows of the entry at `pos` (its metric keys stay: a key without rows ranks nothing)."""
        self._q("DELETE FROM entries WHERE pos = ?", (pos,))
        self._many("DELETE FROM metrics WHERE key = ? AND value = ? AND pos = ?",
                   self._metric_rows([(pos, entry)], create_keys=False))

    def shift(self, after_pos: int, delta: int) -> None:
        if delta:
            self._q("UPDATE entries SET offset = offset + ? WHERE pos > ?", (delta, after_pos))

    def _metric_rows(self, positioned, create_keys: bool = True) -> list:
        """(key id, value, pos) of every metric that can rank; a metric with an int too large to compare exactly
        with floats marks its (task, name) key inexact instead (best() then answers from the JSON)."""
        ids, rows = {}, []
        for pos, entry in positioned:
            task = entry["task"]
            for name, value in entry["metrics"].items():
                kind = type(value)
                if kind is float:
                    if value - value != 0:  # never in a valid file; skipped like any unusable value
                        continue
                elif kind is not int:  # bools, strings, None, objects never rank
                    continue
                key = ids.get((task, name))
                if key is None:
                    key = ids[task, name] = self._key_id(task, name, create_keys)
                if kind is int and not -_EXACT <= value <= _EXACT:
                    if create_keys:
                        self._q("UPDATE metric_keys SET inexact = 1 WHERE id = ?", (key,))
                    continue
                rows.append((key, value, pos))
        return rows

    def _key_id(self, task: str, name: str, create: bool) -> Optional[int]:
        if create:
            self._q("INSERT OR IGNORE INTO metric_keys (task, name) VALUES (?, ?)", (task, name))
        found = self._q("SELECT id FROM metric_keys WHERE task = ? AND name = ?", (task, name))
        return found[0][0] if found else None
