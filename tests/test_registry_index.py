"""The registry's sidecar index never gives a different answer than the JSON file, whatever happens to either.

The JSON file is the source of truth. These tests change it behind the index's back (in place with the same
size right after a write, restored from an older copy, hand-formatted), delete, damage or move the index, fake a
reboot and a filesystem that rounds timestamps, and kill writers between the two files; after each, every query
must equal what a full parse of the file says. They also check that the index is really what answers (the JSON
is not parsed, a registration serializes only its own entry).
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import REPO_ROOT, start_until_ready, subprocess_env
from src.common import registry_format, registry_index, registry_splice, registry_store
from src.common.errors import RegistryCorruptError
from src.common.model_registry import ModelRegistry, normalize_entry
from src.common.registry_format import best_entry, decode_registry, dump_entry, metrics_line
from src.common.registry_index import identity_of, index_path, open_index
from src.common.registry_store import SUMMARY_FIELDS

TASK = "vehicle_detection"


def make_entry(run_id, task=TASK, metrics=None, timestamp="2024-01-15T14:30:22.123456", **extra):
    return {"run_id": run_id, "task": task, "config_hash": "abc123de", "checkpoint_path": f"/runs/{run_id}/b.pth",
            "metrics": {"m": 0.5} if metrics is None else metrics, "timestamp": timestamp,
            "metadata": {"pytorch_version": "2.14.1", "ultralytics_version": "8.4.190", "git_commit": "abc"},
            **extra}


@pytest.fixture
def reg_path(tmp_path):
    return tmp_path / "registry" / "model_registry.json"


def _questions(entries):
    tasks = sorted({e["task"] for e in entries}) + ["no_such_task"]
    names = sorted({k for e in entries for k in e["metrics"]}) + ["no_such_metric"]
    ids = [e["run_id"] for e in entries] + ["no_such_run"]
    hashes = sorted({e["config_hash"] for e in entries}) + ["00000000"]
    return tasks, names, ids, hashes


def answers(path: Path, entries) -> dict:
    """Every query, each through a new ModelRegistry (a new process's view)."""
    tasks, names, ids, hashes = _questions(entries)

    def ask(call):
        return call(ModelRegistry(path))

    return {
        "len": ask(len), "list": ask(lambda r: r.list_entries()),
        "get": [ask(lambda r: r.get_entry(i)) for i in ids],
        "task": [ask(lambda r: r.find_entries_by_task(t)) for t in tasks],
        "hash": [ask(lambda r: r.find_entries_by_config_hash(h)) for h in hashes],
        "best": [ask(lambda r: r.find_best_entry_by_metric(t, n, m)) for t in tasks for n in names
                 for m in ("max", "min")],
        "summaries": [ask(lambda r: r.list_summaries(t)) for t in [None, *tasks]],
        "short summaries": [ask(lambda r: r.list_summaries(t, metrics=False)) for t in [None, *tasks]],
    }


def expected(path: Path) -> dict:
    """The same queries answered from a full parse of the file."""
    entries = decode_registry(path.read_bytes())
    tasks, names, ids, hashes = _questions(entries)
    by_id = {e["run_id"]: e for e in entries}
    return {
        "len": len(entries), "list": entries, "get": [by_id.get(i) for i in ids],
        "task": [[e for e in entries if e["task"] == t] for t in tasks],
        "hash": [[e for e in entries if e["config_hash"] == h] for h in hashes],
        "best": [best_entry(entries, t, n, m) for t in tasks for n in names for m in ("max", "min")],
        "summaries": [[{**{k: e.get(k) for k in SUMMARY_FIELDS}, "metrics_line": metrics_line(e["metrics"])}
                       for e in entries if t in (None, e["task"])] for t in [None, *tasks]],
        "short summaries": [[{**{k: e.get(k) for k in SUMMARY_FIELDS if k != "metrics"},
                             "metrics_line": metrics_line(e["metrics"])}
                            for e in entries if t in (None, e["task"])] for t in [None, *tasks]],
    }


def assert_consistent(path: Path) -> None:
    want = expected(path)
    assert answers(path, want["list"]) == want


def index_trusted(path: Path) -> bool:
    with open(path, "rb") as f, open_index(path, write=False, timeout=5) as index:
        return index is not None and index.trusts(identity_of(f.fileno()))


def canonical(entries) -> bytes:
    lines = [dump_entry(normalize_entry(e)) for e in entries]
    return b"[\n  " + b",\n  ".join(lines) + b"\n]\n" if lines else b"[]\n"


# ---- the index answers -----------------------------------------------------------------------------------------
def test_the_index_answers_without_parsing_the_file(reg_path, monkeypatch):
    registry = ModelRegistry(reg_path)
    registry.register_many([make_entry("a", metrics={"m": 0.1}), make_entry("b", metrics={"m": 0.9}),
                            make_entry("c", task="other", config_hash="ffff0000")])
    assert index_path(reg_path).is_file() and index_trusted(reg_path)
    want = expected(reg_path)

    def parsed(*args):
        raise AssertionError("the whole file was parsed")

    monkeypatch.setattr(registry_store, "decode_with_spans", parsed)
    assert answers(reg_path, want["list"]) == want
    assert ModelRegistry(reg_path).find_best_entry_by_metric(TASK, "m")["run_id"] == "b"


def test_a_registration_serializes_only_its_own_entry(reg_path, monkeypatch):
    ModelRegistry(reg_path).register_many([make_entry(f"r{i}") for i in range(50)])
    dumped = []
    monkeypatch.setattr(registry_splice, "dump_entry", lambda e: dumped.append(e["run_id"]) or dump_entry(e))
    monkeypatch.setattr(registry_store, "decode_with_spans", lambda raw: pytest.fail("the whole file was parsed"))
    ModelRegistry(reg_path).register(make_entry("new"))
    ModelRegistry(reg_path).register(make_entry("r7", metrics={"m": 0.75}))  # replaced in place
    assert ModelRegistry(reg_path).remove_entry("r3")
    assert dumped == ["new", "r7"]
    monkeypatch.undo()
    assert_consistent(reg_path)


def test_splices_keep_the_one_entry_per_line_layout(reg_path):
    registry = ModelRegistry(reg_path)
    model = {}

    def check():
        assert reg_path.read_bytes() == canonical(model.values())
        assert_consistent(reg_path)

    for rid in "abcd":
        registry.register(make_entry(rid))
        model[rid] = make_entry(rid)
        check()
    for rid, extra in [("b", {"note": "a longer line " * 10}), ("a", {}), ("d", {"x": 1})]:  # first, middle, last
        model[rid] = make_entry(rid, **extra)
        registry.register(model[rid])
        check()
    for rid in ("a", "c", "d", "b"):  # first, middle, last, only
        assert registry.remove_entry(rid)
        del model[rid]
        check()
    assert json.loads(reg_path.read_text()) == []


# ---- the file changes behind the index's back ------------------------------------------------------------------
@pytest.mark.parametrize("old, new", [(b'"m": 0.1', b'"m": 0.9'), (b'"m": 0.1', b'"m": NaN'),
                                      (b'"b"', b'"a"'), (b'"m": 0.1', b'"m": 9e9')])
def test_an_in_place_edit_of_the_same_size_right_after_a_write_is_seen(reg_path, old, new):
    for attempt in range(10):  # right after the write, again and again: the clock's tick must not matter
        path = reg_path.with_name(f"r{attempt}.json")
        ModelRegistry(path).register_many([make_entry("a", metrics={"m": 0.1}), make_entry("b", metrics={"m": 0.5})])
        raw = path.read_bytes()
        with open(path, "r+b") as f:  # the same file (inode), the same size
            f.write(raw.replace(old, new, 1))
        if new.endswith(b"NaN"):
            with pytest.raises(RegistryCorruptError, match="NaN"):
                ModelRegistry(path).find_best_entry_by_metric(TASK, "m", "min")
            continue
        if new == b'"a"':
            with pytest.raises(RegistryCorruptError, match="duplicate run_id"):
                len(ModelRegistry(path))
            continue
        assert_consistent(path)
        assert ModelRegistry(path).find_best_entry_by_metric(TASK, "m")["run_id"] == "a"


def test_content_edited_with_its_mtime_put_back_is_seen(reg_path):
    ModelRegistry(reg_path).register_many([make_entry("a", metrics={"m": 0.1}), make_entry("b")])
    st = reg_path.stat()
    reg_path.write_bytes(reg_path.read_bytes().replace(b'"m": 0.1', b'"m": 0.7'))
    os.utime(reg_path, ns=(st.st_atime_ns, st.st_mtime_ns))  # like `touch -r` or `cp -p`
    assert ModelRegistry(reg_path).find_best_entry_by_metric(TASK, "m")["metrics"] == {"m": 0.7}
    assert_consistent(reg_path)


def test_an_older_copy_put_back_is_seen(reg_path, tmp_path):
    registry = ModelRegistry(reg_path)
    registry.register_many([make_entry("a"), make_entry("b")])
    old = reg_path.read_bytes()
    registry.register(make_entry("c", metrics={"m": 0.99}))
    reg_path.write_bytes(old)  # in place
    assert [e["run_id"] for e in registry.list_entries()] == ["a", "b"]
    assert_consistent(reg_path)
    registry.register(make_entry("c", metrics={"m": 0.99}))
    os.replace(reg_path.with_name(reg_path.name + ".bak"), reg_path)  # the .bak restored by rename
    assert registry.get_entry("c") is None and len(registry) == 2
    assert_consistent(reg_path)


def test_a_hand_formatted_unicode_file_is_indexed_and_appended_to(reg_path):
    entries = [normalize_entry(make_entry("zürich_ü", metrics={"mAP_é": 0.3}, note="日本語")),
               normalize_entry(make_entry("b", task="velo", metrics={"mAP_é": 0.8}))]
    reg_path.parent.mkdir(parents=True)
    text = json.dumps(entries, indent=2, ensure_ascii=False).encode()
    reg_path.write_bytes(text)
    assert_consistent(reg_path)  # validated once, then indexed
    ModelRegistry(reg_path).register(make_entry("ñ", task="velo", metrics={"mAP_é": 0.9}))
    assert index_trusted(reg_path)
    assert reg_path.read_bytes()[:len(text) - 3] == text[:-3]  # the hand-formatted part is kept as it was
    assert ModelRegistry(reg_path).get_entry("zürich_ü")["note"] == "日本語"
    assert ModelRegistry(reg_path).find_best_entry_by_metric("velo", "mAP_é")["run_id"] == "ñ"
    assert ModelRegistry(reg_path).remove_entry("b")
    assert [e["run_id"] for e in json.loads(reg_path.read_text())] == ["zürich_ü", "ñ"]
    assert_consistent(reg_path)


def test_integers_floats_cannot_rank_exactly_are_ranked_from_the_file(reg_path):
    big = 2 ** 60
    ModelRegistry(reg_path).register_many([
        make_entry("a", metrics={"m": big}), make_entry("b", metrics={"m": big + 1}),
        make_entry("c", metrics={"m": float(big)}), make_entry("d", metrics={"m": 10 ** 30}),
        make_entry("e", metrics={"m": -(10 ** 30), "n": True, "s": "0.5", "z": None})])
    assert ModelRegistry(reg_path).find_best_entry_by_metric(TASK, "m", "max")["run_id"] == "d"
    assert ModelRegistry(reg_path).find_best_entry_by_metric(TASK, "m", "min")["run_id"] == "e"
    assert ModelRegistry(reg_path).find_best_entry_by_metric(TASK, "n") is None  # a bool is not a value
    assert_consistent(reg_path)


# ---- the index itself is lost, damaged, foreign or stale -------------------------------------------------------
def _damage(kind: str, index: Path, other: Path) -> None:
    if kind == "deleted":
        index.unlink()
    elif kind == "a folder in its place":
        index.unlink()
        index.mkdir()
    elif kind == "from another registry":
        index.write_bytes(index_path(other).read_bytes())
    else:
        data = index.read_bytes()
        index.write_bytes({"garbage": os.urandom(4096), "truncated": data[: len(data) // 2], "empty": b""}[kind])


@pytest.mark.parametrize("kind", ["deleted", "garbage", "truncated", "empty", "a folder in its place",
                                  "from another registry"])
def test_a_lost_damaged_or_foreign_index_changes_no_answer(reg_path, tmp_path, kind):
    other = tmp_path / "other" / "model_registry.json"
    ModelRegistry(other).register_many([make_entry("x", metrics={"m": 0.99}), make_entry("a", metrics={"m": 0.0})])
    ModelRegistry(reg_path).register_many([make_entry("a", metrics={"m": 0.1}), make_entry("b")])
    _damage(kind, index_path(reg_path), other)
    assert_consistent(reg_path)
    ModelRegistry(reg_path).register(make_entry("c", metrics={"m": 0.7}))
    assert_consistent(reg_path)
    assert ModelRegistry(reg_path).find_best_entry_by_metric(TASK, "m")["run_id"] == "c"
    if kind != "a folder in its place":
        assert index_trusted(reg_path)  # rebuilt


def test_an_index_from_another_boot_is_not_trusted(reg_path, monkeypatch):
    ModelRegistry(reg_path).register_many([make_entry("a"), make_entry("b")])
    assert index_trusted(reg_path)
    monkeypatch.setattr(registry_index, "_boot_id", lambda: "a-new-boot")
    assert not index_trusted(reg_path)
    assert_consistent(reg_path)
    ModelRegistry(reg_path).register(make_entry("c"))
    assert index_trusted(reg_path)


def test_a_filesystem_that_drops_the_mtime_stamp_leaves_the_index_unsealed(reg_path, monkeypatch):
    ModelRegistry(reg_path).register(make_entry("a"))
    real_utime = os.utime
    monkeypatch.setattr(registry_store.os, "utime", lambda *args, **kwargs: None)
    ModelRegistry(reg_path).register(make_entry("b", metrics={"m": 0.9}))
    with sqlite3.connect(index_path(reg_path)) as conn:
        assert conn.execute("SELECT sealed FROM meta").fetchone() == (0,)
    assert not index_trusted(reg_path)
    monkeypatch.setattr(registry_store.os, "utime", real_utime)
    assert_consistent(reg_path)  # from the file; a reader seals the index once the file's mtime is in the past


def test_a_schema_from_another_version_is_rebuilt(reg_path):
    ModelRegistry(reg_path).register_many([make_entry("a"), make_entry("b")])
    with sqlite3.connect(index_path(reg_path)) as conn:
        conn.execute("UPDATE meta SET version = version + 1")
    assert not index_trusted(reg_path)
    assert_consistent(reg_path)
    ModelRegistry(reg_path).register(make_entry("c"))
    assert index_trusted(reg_path)


# ---- any sequence of operations --------------------------------------------------------------------------------
values = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.integers(2 ** 53 - 2, 2 ** 53 + 2),
                   st.floats(width=16, allow_nan=False, allow_infinity=False), st.just("0.5"))
ops = st.lists(st.tuples(st.sampled_from(["register", "register_many", "remove"]), st.integers(0, 5),
                         st.sampled_from(["t1", "t2"]), values, st.integers(1, 3)), max_size=8)


@settings(max_examples=25, deadline=None)
@given(steps=ops)
def test_any_sequence_of_operations_matches_the_file(tmp_path_factory, steps):
    path = tmp_path_factory.mktemp("seq") / "model_registry.json"
    registry = ModelRegistry(path)
    model = {}
    for op, k, task, value, day in steps:
        entry = make_entry(f"r{k}", task=task, metrics={} if value is None else {"m": value},
                           timestamp=f"2024-01-0{day}T00:00:00")
        if op == "remove":
            assert registry.remove_entry(f"r{k}") == (f"r{k}" in model)
            model.pop(f"r{k}", None)
        elif op == "register":
            registry.register(entry)
            model[entry["run_id"]] = entry
        else:
            twin = make_entry(f"r{(k + 1) % 6}", task=task, metrics={"m": 1})
            registry.register_many([entry, twin])
            model.update({entry["run_id"]: entry, twin["run_id"]: twin})
    if path.exists():
        assert [e["run_id"] for e in json.loads(path.read_text())] == list(model)
        assert_consistent(path)


# ---- killed between the two files -----------------------------------------------------------------------------
HANG = """
import sys, time
from pathlib import Path
from src.common import registry_index
from src.common.model_registry import ModelRegistry
path, ready, where = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
original = getattr(registry_index.Index, where)

def hang(self, *args, **kwargs):
    original(self, *args, **kwargs)
    ready.touch()
    time.sleep(120)  # SIGKILLed here

setattr(registry_index.Index, where, hang)
registry = ModelRegistry(path)
if where == "rebuild":
    registry.list_entries()  # a reader that validated the file and indexes it
else:
    registry.register({"run_id": "doomed", "task": "vehicle_detection", "config_hash": "abc123de",
                       "checkpoint_path": "/runs/doomed/b.pth", "metrics": {"m": 0.99}, "metadata": {}})
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["add", "set_identity", "rebuild"])
def test_killed_between_the_json_and_the_index(reg_path, tmp_path, where):
    ModelRegistry(reg_path).register_many([make_entry("a"), make_entry("b", metrics={"m": 0.7})])
    if where == "rebuild":
        index_path(reg_path).unlink()
        st = reg_path.stat()  # a reader seals an index only of a file last written before it started reading
        os.utime(reg_path, ns=(st.st_atime_ns, st.st_mtime_ns - 10 ** 9 + 1))
    ready = tmp_path / "ready"
    proc = start_until_ready(HANG, reg_path, ready, where, ready=ready)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    json.loads(reg_path.read_text())  # a valid array at every moment
    assert not index_trusted(reg_path)  # its transaction was rolled back: it still names the old file
    assert_consistent(reg_path)
    if where != "rebuild":
        assert ModelRegistry(reg_path).find_best_entry_by_metric(TASK, "m")["run_id"] == "doomed"
    ModelRegistry(reg_path, lock_timeout=5).register(make_entry("after"))
    assert index_trusted(reg_path)
    assert_consistent(reg_path)


STORM = """
import sys
from src.common.model_registry import ModelRegistry
registry = ModelRegistry(sys.argv[1])
for j in range(10 ** 6):
    k = j % 7
    entry = {"run_id": f"s{k}", "task": "vehicle_detection", "config_hash": "abc123de",
             "checkpoint_path": "/runs/b.pth", "metrics": {"m": j % 11, "pad": "x" * (j % 300)}, "metadata": {}}
    if j % 5 == 4:
        registry.remove_entry(f"s{k}")
    else:
        registry.register(entry)
"""


@pytest.mark.slow
def test_a_writer_killed_at_random_moments_never_breaks_the_registry(reg_path):
    ModelRegistry(reg_path).register(make_entry("first"))
    rng = __import__("random").Random(16)
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", STORM, str(reg_path)], cwd=REPO_ROOT, env=subprocess_env(),
                                stderr=subprocess.PIPE, text=True)
        time.sleep(0.6 + rng.random() * 0.6)  # somewhere in a write, the index or neither: any moment is fine
        assert proc.poll() is None, proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        assert isinstance(json.loads(reg_path.read_text()), list), round_
        assert_consistent(reg_path)
    assert registry_format.decode_registry(reg_path.read_bytes())[0]["run_id"] == "first"


def test_an_index_whose_rows_disagree_with_the_file_is_rebuilt(reg_path):
    ModelRegistry(reg_path).register_many([make_entry("a", metrics={"m": 0.1}), make_entry("b", metrics={"m": 0.5})])
    with sqlite3.connect(index_path(reg_path)) as conn:  # meta still names the file; the rows no longer match it
        conn.execute("UPDATE entries SET offset = offset + 1")
        conn.execute("UPDATE metrics SET value = 0.9 WHERE value = 0.1")
    assert index_trusted(reg_path)
    assert_consistent(reg_path)  # every answer read back from the file is checked
    with sqlite3.connect(index_path(reg_path)) as conn:
        assert conn.execute("SELECT count(*) FROM metrics WHERE value = 0.9").fetchone() == (0,)  # rebuilt
