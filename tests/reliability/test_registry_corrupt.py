"""Corrupt registry files: every read and write refuses them with one line, and `rebuild` always recovers.

One table of damaged `model_registry.json` contents, each checked three ways: through the Python API (every
call raises RegistryCorruptError, the file is left byte for byte), through `ModelRegistry.rebuild()` (the file
is moved aside, never deleted, and a valid JSON array is rebuilt from the run directories), and through the
`street-scene registry` command as a user runs it (exit 2 and one `error:` line, then `rebuild` exits 0).
"""

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.common.config_manager import compute_config_hash
from src.common.errors import RegistryCorruptError, UserError
from src.common.model_registry import ModelRegistry
from src.common.registry_format import InvalidRegistry, decode_registry, decode_with_spans
from src.common.yaml_io import dump_yaml
from tests.helpers import run_cli

TASK = "vehicle_detection"
RUNS = ("20240101_000000_a", "20240102_000000_b")


def _entry(run_id="a", **changes) -> dict:
    entry = {"run_id": run_id, "task": TASK, "config_hash": "abc123de", "checkpoint_path": f"/runs/{run_id}/b.pth",
             "metrics": {"best_val_metric": 0.5}, "timestamp": "2024-01-15T14:30:22.123456",
             "metadata": {"pytorch_version": "2.14.1", "ultralytics_version": "8.4.190", "git_commit": "abc"}}
    return {**entry, **changes}


def _array(*entries) -> bytes:
    return json.dumps(list(entries), indent=1).encode()


GOOD = _array(_entry("a"), _entry("b"))
NESTED_900 = '{"m": ' + "[" * 900 + "]" * 900 + "}"
CORRUPT = {
    # decoder-level failures, including the ones json raises as something other than JSONDecodeError
    "100000 open brackets (RecursionError)": b"[" * 100_000,
    "5000-digit integer (int conversion limit)": GOOD.replace(b"0.5", b"1" * 5000, 1),
    "NaN literal": GOOD.replace(b"0.5", b"NaN", 1),
    "Infinity literal": GOOD.replace(b"0.5", b"Infinity", 1),
    "-Infinity literal": GOOD.replace(b"0.5", b"-Infinity", 1),
    "float overflowing to inf (1e999)": GOOD.replace(b"0.5", b"1e999", 1),
    "empty file": b"",
    "whitespace only": b" \n\t\n",
    "binary garbage": bytes(range(256)) * 8,
    "NUL bytes": b"\0" * 64,
    "truncated": GOOD[: len(GOOD) // 2],
    "trailing garbage": GOOD + b"]",
    "UTF-8 BOM": b"\xef\xbb\xbf" + GOOD,
    "UTF-16": GOOD.decode().encode("utf-16"),
    # valid JSON that is not a registry
    "top-level object": json.dumps({"entries": [_entry()]}).encode(),
    "top-level null": b"null",
    "top-level string": b'"[]"',
    "entry not an object": b"[1, 2]",
    "missing field": _array({k: v for k, v in _entry().items() if k != "checkpoint_path"}),
    "run_id is a number": _array(_entry(run_id=5)),
    "empty run_id": _array(_entry(run_id="")),
    "metrics is a string": _array(_entry(metrics="0.5")),
    "metadata is a list": _array(_entry(metadata=[])),
    "timestamp is a number": _array(_entry(timestamp=20240115)),
    "timestamp not ISO 8601": _array(_entry(timestamp="yesterday")),
    "run_dir is an object": _array(_entry(run_dir={"path": "/runs/a"})),
    "status is a number": _array(_entry(status=1)),
    "duplicate run_ids": _array(_entry("a"), _entry("b"), _entry("a")),
    "unpaired surrogate escape": _array(_entry(run_id="a")).replace(b'"a"', b'"\\ud800"', 1),
    "metric nested 40 deep": _array(_entry(metrics={"m": json.loads("[" * 40 + "]" * 40)})),
    "metric nested 900 deep": GOOD.replace(b'{\n   "best_val_metric": 0.5\n  }', NESTED_900.encode(), 1),
}


def test_the_table_really_holds_damaged_variants():
    assert len(CORRUPT) >= 12
    # each replace() above found its target, so no variant is accidentally the good file
    assert all(raw != GOOD for raw in CORRUPT.values())
    assert len(set(CORRUPT.values())) == len(CORRUPT)


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_the_indexing_decoder_refuses_each_variant_with_the_same_message(kind):
    """decode_with_spans (what builds the index) must refuse exactly what decode_registry refuses."""
    with pytest.raises(InvalidRegistry) as canonical:
        decode_registry(CORRUPT[kind])
    with pytest.raises(InvalidRegistry) as indexing:
        decode_with_spans(CORRUPT[kind])
    assert str(indexing.value) == str(canonical.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12)
DAMAGE = [(b"", b""), (b"0.5", b"1e999"), (b"0.5", b"1E+400"), (b"0.5", b"-1e-400"), (b'"a"', b'"\\ud800"'),
          (b'"a"', b'"\\uDC00x"'), (b"0.5", b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"),
          (b"0.5", b"9" * 400 + b".0"), (b"0.5", b"9" * 400), (b'"b"', b'"a"'), (b"0.5", b"0.5 0.5")]


@settings(max_examples=200, deadline=None)
@given(extras=st.lists(json_values, min_size=1, max_size=3), indent=st.sampled_from([None, 0, 1, 2]),
       ascii_only=st.booleans(), damage=st.sampled_from(DAMAGE))
def test_the_indexing_decoder_agrees_with_the_validator(extras, indent, ascii_only, damage):
    entries = [_entry(rid, extra=x) for rid, x in zip("abc", extras)]
    raw = json.dumps(entries, indent=indent, ensure_ascii=ascii_only).encode()
    if damage[0]:
        raw = raw.replace(*damage, 1)
    try:
        expected = decode_registry(raw)
    except InvalidRegistry as exc:
        with pytest.raises(InvalidRegistry) as info:
            decode_with_spans(raw)
        assert str(info.value) == str(exc)
        return
    found, spans, body_end = decode_with_spans(raw)
    assert found == expected
    assert [json.loads(raw[o:o + n]) for o, n in spans] == expected  # each span is exactly its entry
    assert raw[body_end:].strip(b" \t\r\n") == b"]"


def _make_run_dir(outputs: Path, name: str) -> Path:
    run_dir = outputs / name
    run_dir.mkdir(parents=True)
    config = {"model": {"name": "yolov8n"}, "seed": 42}
    (run_dir / "config.yaml").write_text(dump_yaml(config))
    (run_dir / "best_model.pth").write_bytes(name.encode())
    meta = {"run_id": name, "status": "completed", "subtask": TASK, "config_hash": compute_config_hash(config),
            "finished_at": f"2024-01-{name[6:8]}T12:00:00", "pytorch_version": "2.14.1",
            "ultralytics_version": "8.4.190", "git_commit": "abc123",
            "result": {"checkpoint": "best_model.pth", "metrics": {"best_val_metric": 0.5},
                       "checkpoint_sha256": hashlib.sha256(name.encode()).hexdigest()}}
    (run_dir / "metadata.yaml").write_text(dump_yaml(meta))
    return run_dir


@pytest.fixture
def workspace(tmp_path):
    """A registry path with a valid .bak beside it and two completed run dirs to rebuild from."""
    for name in RUNS:
        _make_run_dir(tmp_path / "outputs", name)
    reg_path = tmp_path / "registry" / "model_registry.json"
    registry = ModelRegistry(reg_path)
    registry.register(_entry("a"))
    registry.register(_entry("b"))  # leaves a valid model_registry.json.bak
    return tmp_path, reg_path


CALLS = {
    "list_entries": lambda r: r.list_entries(),
    "len": lambda r: len(r),
    "get_entry": lambda r: r.get_entry("a"),
    "find_entries_by_task": lambda r: r.find_entries_by_task(TASK),
    "find_entries_by_config_hash": lambda r: r.find_entries_by_config_hash("abc123de"),
    "find_best_entry_by_metric": lambda r: r.find_best_entry_by_metric(TASK, "best_val_metric"),
    "verify": lambda r: r.verify(),
    "export_to_csv": lambda r: r.export_to_csv(r.path.parent / "export.csv"),
    "register": lambda r: r.register(_entry("new")),
    "register_many": lambda r: r.register_many([_entry("new1"), _entry("new2")]),
    "remove_entry": lambda r: r.remove_entry("a"),
}


def _assert_one_clear_line(exc: RegistryCorruptError, reg_path: Path) -> None:
    message = str(exc)
    assert isinstance(exc, UserError)
    assert "\n" not in message and "\r" not in message and len(message) < 1000
    assert message.startswith(f"registry {reg_path} is corrupt: ")
    assert "street-scene registry rebuild" in message


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_every_read_and_write_refuses_the_file_and_leaves_it(workspace, kind):
    _, reg_path = workspace
    reg_path.write_bytes(CORRUPT[kind])
    bak = reg_path.with_name(reg_path.name + ".bak")
    bak_before = bak.read_bytes()
    for name, call in CALLS.items():
        with pytest.raises(RegistryCorruptError) as info:
            call(ModelRegistry(reg_path))
        _assert_one_clear_line(info.value, reg_path)
        assert f"the last good version is {bak}" in str(info.value), name  # the .bak is a valid registry
    assert reg_path.read_bytes() == CORRUPT[kind]
    assert bak.read_bytes() == bak_before
    assert not (reg_path.parent / "export.csv").exists()


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_rebuild_moves_the_file_aside_and_recovers(workspace, kind):
    tmp_path, reg_path = workspace
    reg_path.write_bytes(CORRUPT[kind])
    report = ModelRegistry(reg_path).rebuild(tmp_path / "outputs")
    assert report.moved_aside is not None
    assert report.moved_aside.parent == reg_path.parent
    assert report.moved_aside.name.startswith("model_registry.json.corrupt-")
    assert report.moved_aside.read_bytes() == CORRUPT[kind]  # never deleted, byte for byte
    with open(reg_path) as f:
        data = json.load(f)
    assert isinstance(data, list) and [e["run_id"] for e in data] == list(RUNS)
    assert [e["run_id"] for e in ModelRegistry(reg_path).list_entries()] == list(RUNS)
    assert report.skipped == []
    ModelRegistry(reg_path).register(_entry("after"))  # and it is writable again
    assert len(ModelRegistry(reg_path)) == 3


def test_rebuilding_twice_keeps_both_corrupt_files(workspace):
    tmp_path, reg_path = workspace
    moved = []
    for kind in ("NaN literal", "empty file"):
        reg_path.write_bytes(CORRUPT[kind])
        moved.append(ModelRegistry(reg_path).rebuild(tmp_path / "outputs").moved_aside)
    assert moved[0] != moved[1]
    assert [p.read_bytes() for p in moved] == [CORRUPT["NaN literal"], CORRUPT["empty file"]]


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CORRUPT))
def test_the_command_line_refuses_then_rebuilds(workspace, kind):
    tmp_path, reg_path = workspace
    reg_path.write_bytes(CORRUPT[kind])
    env = {"STREET_SCENE_REGISTRY": str(reg_path), "STREET_SCENE_OUTPUT_DIR": str(tmp_path / "outputs")}
    proc = run_cli("registry", "list", cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: registry {reg_path} is corrupt: ")
    assert "street-scene registry rebuild" in lines[0]

    proc = run_cli("registry", "rebuild", cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "moved the corrupt registry aside to" in proc.stdout and "rebuilt" in proc.stdout
    [aside] = reg_path.parent.glob("model_registry.json.corrupt-*")
    assert aside.read_bytes() == CORRUPT[kind]
    assert [e["run_id"] for e in json.loads(reg_path.read_text())] == list(RUNS)
