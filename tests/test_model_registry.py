"""ModelRegistry: the documented API, the file format, concurrency, crash safety, corruption and rebuild/verify."""

import csv
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import REPO_ROOT, start_until_ready, subprocess_env
from src.common.config_manager import compute_config_hash
from src.common.errors import RegistryCorruptError, UserError
from src.common.model_registry import ModelRegistry, build_entry
from src.common.registry_store import RegistryLockedError
from src.common.yaml_io import dump_yaml

TASK = "vehicle_detection"
GUIDE_FIELDS = ("run_id", "task", "config_hash", "checkpoint_path", "metrics", "timestamp", "metadata")


def make_entry(run_id, task=TASK, metrics=None, timestamp="2024-01-15T14:30:22.123456", **extra):
    return {"run_id": run_id, "task": task, "config_hash": "abc123de",
            "checkpoint_path": f"/runs/{run_id}/best_model.pth",
            "metrics": {"best_val_metric": 0.5} if metrics is None else metrics, "timestamp": timestamp,
            "metadata": {"pytorch_version": "2.14.1", "ultralytics_version": "8.4.190", "git_commit": "abc123"},
            **extra}


def make_run_dir(root: Path, name: str, *, task=TASK, status="completed", metrics=None,
                 finished_at="2024-01-15T14:30:22.123456", config=None) -> Path:
    """A run directory as the runner writes it: config.yaml, metadata.yaml and a (dummy) best_model.pth."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = config or {"model": {"name": "yolov8n"}, "training": {"epochs": 1, "learning_rate": 1e-4}, "seed": 42}
    (run_dir / "config.yaml").write_text(dump_yaml(config))
    weights = f"weights of {name}".encode()
    (run_dir / "best_model.pth").write_bytes(weights)
    meta = {"run_id": name, "run_name": name.split("_", 2)[-1], "status": status, "task": "detection",
            "subtask": task, "config_hash": compute_config_hash(config), "seed": 42, "seed_source": "default",
            "started_at": "2024-01-15T14:00:00.000000", "finished_at": finished_at,
            "pytorch_version": "2.14.1", "torchvision_version": "0.29.1", "ultralytics_version": "8.4.190",
            "numpy_version": "2.4.6", "python_version": "3.11.7", "device": "cpu", "hostname": "box",
            "git_commit": "abc123def456", "git_branch": "main", "git_dirty": False}
    if status == "completed":
        meta["result"] = {"checkpoint": "best_model.pth", "checkpoint_sha256": hashlib.sha256(weights).hexdigest(),
                          "metrics": metrics or {"best_val_metric": 0.5}}
    (run_dir / "metadata.yaml").write_text(dump_yaml(meta))
    return run_dir


@pytest.fixture
def reg_path(tmp_path):
    return tmp_path / "registry" / "model_registry.json"


@pytest.fixture
def registry(reg_path):
    return ModelRegistry(reg_path)


# ---- construction and format ------------------------------------------------------------------------------
def test_missing_file_is_an_empty_registry_and_reading_creates_nothing(registry, reg_path):
    assert registry.list_entries() == []
    assert registry.get_entry("x") is None
    assert registry.find_entries_by_task(TASK) == []
    assert registry.find_best_entry_by_metric(TASK, "best_val_metric") is None
    assert not reg_path.parent.exists()


def test_default_path_comes_from_env_else_cwd_at_construction(tmp_path, monkeypatch):
    monkeypatch.setenv("STREET_SCENE_REGISTRY", str(tmp_path / "env" / "reg.json"))
    assert ModelRegistry().path == tmp_path / "env" / "reg.json"
    monkeypatch.delenv("STREET_SCENE_REGISTRY")
    monkeypatch.chdir(tmp_path)
    registry = ModelRegistry()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # resolved when constructed, not when used
    registry.register(make_entry("r1"))
    assert (tmp_path / "registry" / "model_registry.json").is_file()


def test_guide_positional_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    registry = ModelRegistry("registry/model_registry.json")
    registry.register(make_entry("r1"))
    assert registry.path == tmp_path / "registry" / "model_registry.json"
    assert [e["run_id"] for e in ModelRegistry("registry/model_registry.json").list_entries()] == ["r1"]


def test_register_writes_the_guide_json_array(registry, reg_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stored = registry.register(make_entry("r1", checkpoint_path="outputs/r1/best_model.pth",
                                          metadata={"git_commit": "abc"}, status="completed"))
    data = json.loads(reg_path.read_text())
    assert isinstance(data, list) and len(data) == 1
    assert list(data[0])[:len(GUIDE_FIELDS)] == list(GUIDE_FIELDS)
    assert data[0] == stored
    assert data[0]["checkpoint_path"] == str(tmp_path / "outputs" / "r1" / "best_model.pth")
    assert data[0]["metadata"] == {"pytorch_version": None, "ultralytics_version": None, "git_commit": "abc"}
    assert data[0]["status"] == "completed"
    datetime.fromisoformat(data[0]["timestamp"])


def test_missing_timestamp_defaults_to_now(registry):
    entry = make_entry("r1")
    del entry["timestamp"]
    before = datetime.now()
    stored = registry.register(entry)
    assert before <= datetime.fromisoformat(stored["timestamp"]) <= datetime.now()


def test_registering_a_run_id_again_updates_it_in_place(registry):
    registry.register(make_entry("a", metrics={"best_val_metric": 0.1}))
    registry.register(make_entry("b"))
    registry.register(make_entry("a", metrics={"best_val_metric": 0.9}))
    assert [e["run_id"] for e in registry.list_entries()] == ["a", "b"]
    assert registry.get_entry("a")["metrics"] == {"best_val_metric": 0.9}
    assert registry.add_entry == registry.register  # the "register/add"


def test_register_many_writes_once_and_last_duplicate_wins(registry):
    assert registry.register_many([make_entry("a"), make_entry("b"), make_entry("a", config_hash="ffff0000")]) == 3
    assert len(registry) == 2
    assert registry.get_entry("a")["config_hash"] == "ffff0000"


def test_returned_entries_are_copies(registry):
    registry.register(make_entry("a"))
    registry.get_entry("a")["metrics"]["best_val_metric"] = 99
    registry.list_entries()[0]["task"] = "other"
    assert registry.get_entry("a")["metrics"]["best_val_metric"] == 0.5
    assert registry.get_entry("a")["task"] == TASK


class Scalar:  # like numpy.float32 / a 0-d torch tensor
    def __init__(self, value):
        self.value = value

    def item(self):
        return self.value


def test_values_are_stored_as_standard_json(registry, reg_path):
    registry.register(make_entry("a", metrics={"s": Scalar(0.25), "none": None},
                                 metadata={"nan": float("nan"), "inf": math.inf}, run_dir=Path("/runs/a"),
                                 dataset={"train": ("x", 1)}))
    stored = json.loads(reg_path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert stored[0]["metrics"] == {"s": 0.25, "none": None}
    assert stored[0]["metadata"]["nan"] is None and stored[0]["metadata"]["inf"] is None  # metadata: null
    assert stored[0]["run_dir"] == "/runs/a"
    assert stored[0]["dataset"] == {"train": ["x", 1]}


@pytest.mark.parametrize("metrics, name", [
    ({"best_val_metric": float("nan")}, "metrics.best_val_metric"),
    ({"loss": -math.inf}, "metrics.loss"),
    ({"val/mAP50": Scalar(float("nan"))}, "metrics.val/mAP50"),
    ({"per_class": {"car": 0.5, "bus": math.inf}}, "metrics.per_class.bus"),
    ({"curve": [0.1, float("nan")]}, r"metrics.curve\[1\]"),
])
def test_non_finite_metrics_are_refused_naming_the_metric(registry, reg_path, metrics, name):
    with pytest.raises(ValueError, match=f"field {name} is (nan|inf|-inf); metric values must be finite"):
        registry.register(make_entry("a", metrics=metrics))
    assert not reg_path.exists()


def test_find_best_never_returns_a_nan_model(registry, reg_path):
    registry.register_many([make_entry("good", metrics={"m": 0.1}), make_entry("other", metrics={"m": 0.05})])
    with pytest.raises(ValueError, match="metrics.m"):
        registry.register(make_entry("diverged", metrics={"m": float("nan")}))
    assert registry.find_best_entry_by_metric(TASK, "m", "max")["run_id"] == "good"
    assert registry.find_best_entry_by_metric(TASK, "m", "min")["run_id"] == "other"
    # A NaN written into the file by hand is a corrupt registry, never a candidate.
    text = reg_path.read_text().replace('"m": 0.1', '"m": NaN')
    reg_path.write_text(text)
    with pytest.raises(RegistryCorruptError, match="NaN"):
        registry.find_best_entry_by_metric(TASK, "m", "min")


@pytest.mark.parametrize("entry, message", [
    (make_entry("a", checkpoint_sha256=12345), "checkpoint_sha256 must be a string or None"),
    (make_entry("a", run_dir=5), "run_dir must be a string or None"),
    (make_entry("a", metadata={"deep": json.loads("[" * 40 + "]" * 40)}), "nested more than"),
    (make_entry("a", metadata={"text": "\ud800"}), "unpaired surrogate"),
])
def test_entries_the_file_could_not_hold_are_refused(registry, reg_path, entry, message):
    with pytest.raises(ValueError, match=message):
        registry.register(entry)
    assert not reg_path.exists()


def test_a_self_referencing_entry_is_refused_not_a_recursion_error(registry):
    metadata = {}
    metadata["self"] = metadata
    with pytest.raises(ValueError, match="nested more than"):
        registry.register(make_entry("a", metadata=metadata))


# ---- queries --------------------------------------------------------------------------------------------
def test_find_entries_by_task_and_config_hash(registry):
    registry.register_many([make_entry("a"), make_entry("b", task="pedestrian_detection"),
                            make_entry("c", config_hash="12345678")])
    assert [e["run_id"] for e in registry.find_entries_by_task(TASK)] == ["a", "c"]
    assert [e["run_id"] for e in registry.find_entries_by_task("road_scene_segmentation")] == []
    assert registry.find_entries_by_task("cars") == []  # any subtask name may be asked for
    assert [e["run_id"] for e in registry.find_entries_by_config_hash("abc123de")] == ["a", "b"]
    assert registry.find_entries_by_config_hash("00000000") == []


def test_find_best_max_and_min_skip_unusable_values(registry):
    registry.register_many([
        make_entry("low", metrics={"best_val_metric": 0.2, "loss": 0.9}),
        make_entry("high", metrics={"best_val_metric": 0.8, "loss": 0.3}),
        make_entry("none", metrics={"best_val_metric": None, "loss": 0.1}),
        make_entry("text", metrics={"best_val_metric": "0.99"}),
        make_entry("flag", metrics={"best_val_metric": True}),
        make_entry("absent", metrics={}),
        make_entry("other_task", task="pedestrian_detection", metrics={"best_val_metric": 1.0}),
    ])
    assert registry.find_best_entry_by_metric(task=TASK, metric_name="best_val_metric", mode="max")["run_id"] == "high"
    assert registry.find_best_entry_by_metric(TASK, "best_val_metric", "min")["run_id"] == "low"
    assert registry.find_best_entry_by_metric(TASK, "loss", "min")["run_id"] == "none"
    assert registry.find_best_entry_by_metric(TASK, "missing_metric") is None
    assert registry.find_best_entry_by_metric("traffic_sign_detection", "best_val_metric") is None


def test_find_best_ties_do_not_depend_on_registration_order(tmp_path):
    entries = [make_entry("b", timestamp="2024-01-02T00:00:00"), make_entry("a", timestamp="2024-01-02T00:00:00"),
               make_entry("c", timestamp="2024-01-01T00:00:00", metrics={"best_val_metric": 0.5})]
    for order in (entries, entries[::-1]):
        registry = ModelRegistry(tmp_path / f"{order[0]['run_id']}.json")
        registry.register_many(order)
        assert registry.find_best_entry_by_metric(TASK, "best_val_metric")["run_id"] == "c"  # earliest first
        registry.remove_entry("c")
        assert registry.find_best_entry_by_metric(TASK, "best_val_metric")["run_id"] == "a"  # then run_id


# Finite floats only: register() refuses NaN/inf metrics (test_non_finite_metrics_are_refused_naming_the_metric).
metric_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 3),
                          st.floats(width=16, allow_nan=False, allow_infinity=False), st.just("0.5"))


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.tuples(metric_values, st.integers(1, 3)), max_size=7), mode=st.sampled_from(["max", "min"]))
def test_find_best_matches_a_reference(tmp_path_factory, values, mode):
    entries = [make_entry(f"r{i}", metrics={} if v is None else {"m": v}, timestamp=f"2024-01-0{day}T00:00:00")
               for i, (v, day) in enumerate(values)]
    usable = [(v, e["timestamp"], e["run_id"]) for (v, _), e in zip(values, entries)
              if type(v) in (int, float) and math.isfinite(v)]
    expected = None
    if usable:
        best = (max if mode == "max" else min)(v for v, _, _ in usable)
        expected = min((ts, rid) for v, ts, rid in usable if v == best)[1]
    for order in (entries, entries[::-1]):
        registry = ModelRegistry(tmp_path_factory.mktemp("hyp") / "r.json")
        registry.register_many(order)
        found = registry.find_best_entry_by_metric(TASK, "m", mode)
        assert (found["run_id"] if found else None) == expected


def test_export_to_csv_flattens_metrics_and_metadata(registry, tmp_path):
    registry.register_many([make_entry("a", metrics={"val/mAP50": 0.5}, dataset={"train": "sha256:1"}),
                            make_entry("b", metrics={"best_val_metric": 0.7, "val/mAP50": 0.6})])
    out = tmp_path / "export" / "model_registry.csv"
    out.parent.mkdir()
    assert registry.export_to_csv(out) == 2
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run_id"] for r in rows] == ["a", "b"]
    assert rows[0]["metrics.val/mAP50"] == "0.5" and rows[1]["metrics.val/mAP50"] == "0.6"
    assert rows[0]["metrics.best_val_metric"] == "" and rows[1]["metrics.best_val_metric"] == "0.7"
    assert rows[1]["metadata.pytorch_version"] == "2.14.1"
    assert rows[0]["dataset.train"] == "sha256:1"
    assert "metrics" not in rows[0] and "metadata" not in rows[0]


def test_export_of_an_empty_registry_writes_a_header(registry, tmp_path):
    assert registry.export_to_csv(tmp_path / "empty.csv") == 0
    assert (tmp_path / "empty.csv").read_text().startswith("run_id,task,config_hash,checkpoint_path")


def test_export_never_creates_folders_or_writes_over_one(registry, tmp_path):
    registry.register(make_entry("a"))
    with pytest.raises(UserError, match=r"the folder .*missing/deeper does not exist; create it first"):
        registry.export_to_csv(tmp_path / "missing" / "deeper" / "x.csv")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(UserError, match="it is a folder; give a file name"):
        registry.export_to_csv(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry"]


def test_remove_entry(registry):
    registry.register_many([make_entry("a"), make_entry("b"), make_entry("c")])
    assert registry.remove_entry("b") is True
    assert registry.remove_entry("b") is False
    assert [e["run_id"] for e in ModelRegistry(registry.path).list_entries()] == ["a", "c"]


@pytest.mark.parametrize("call, message", [
    (lambda r: r.register(make_entry(5)), "run_id must be a non-empty string"),
    (lambda r: r.register(make_entry("")), "run_id must be a non-empty string"),
    (lambda r: r.register(make_entry("a", task="")), "invalid task name ''"),
    (lambda r: r.register(make_entry("a", task="cars/../x")), "invalid task name"),
    (lambda r: r.register(make_entry("a", task=None)), "invalid task name None"),
    (lambda r: r.register(make_entry("a", metrics=[0.5])), "metrics must be a dict"),
    (lambda r: r.register(make_entry("a", timestamp="15/01/2024")), "not ISO 8601"),
    (lambda r: r.register(make_entry("a", config_hash=None)), "config_hash must be a non-empty string"),
    (lambda r: r.register(make_entry("a", extra=object())), "JSON cannot store"),
    (lambda r: r.register(["a"]), "must be a dict"),
    (lambda r: r.get_entry(5), "run_id must be a non-empty string"),
    (lambda r: r.remove_entry(None), "run_id must be a non-empty string"),
    (lambda r: r.find_entries_by_task(" "), "invalid task name"),
    (lambda r: r.find_entries_by_config_hash(123), "config_hash must be a string"),
    (lambda r: r.find_best_entry_by_metric(TASK, "m", mode="best"), "mode must be 'max' or 'min'"),
    (lambda r: r.find_best_entry_by_metric("vehicle\ndetection", "m"), "invalid task name"),
    (lambda r: r.find_best_entry_by_metric(TASK, 3), "metric_name must be a non-empty string"),
])
def test_invalid_arguments_raise_value_error(registry, reg_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(registry)
    assert not reg_path.exists()


@pytest.mark.parametrize("task", ["vehicle_detection", "car_detection", "my-task.v2", "Road_Scene_2", "x"])
def test_any_subtask_name_is_a_task(registry, task):
    """The registry keeps no list of subtasks: a new one in a config registers without code changes."""
    registry.register(make_entry("a", task=task))
    assert [e["run_id"] for e in registry.find_entries_by_task(task)] == ["a"]
    assert registry.find_best_entry_by_metric(task, "best_val_metric")["run_id"] == "a"


@pytest.mark.parametrize("task", ["", " ", "a b", "a/b", "a\\b", "vehicle_detection\n", "\tx", "é", 5, None])
def test_malformed_task_names_are_refused(registry, task):
    with pytest.raises(ValueError, match="invalid task name"):
        registry.register(make_entry("a", task=task))
    with pytest.raises(ValueError, match="invalid task name"):
        registry.find_entries_by_task(task)


# ---- backup, corruption, locking ----------------------------------------------------------------------------
def test_each_write_keeps_the_previous_good_version_as_bak(registry, reg_path):
    bak = reg_path.with_name("model_registry.json.bak")
    registry.register(make_entry("a"))
    assert not bak.exists()
    first = reg_path.read_bytes()
    registry.register(make_entry("b"))
    assert bak.read_bytes() == first
    second = reg_path.read_bytes()
    registry.remove_entry("a")
    assert bak.read_bytes() == second
    assert [e["run_id"] for e in json.loads(bak.read_text())] == ["a", "b"]


GOOD = make_entry("a")
CORRUPT_FILES = {
    "invalid JSON": b'[{"run_id": "a", ',
    "not an array": json.dumps({"entries": [GOOD]}).encode(),
    "missing field": json.dumps([{k: v for k, v in GOOD.items() if k != "metrics"}]).encode(),
    "wrong type": json.dumps([{**GOOD, "metrics": "0.5"}]).encode(),
    "duplicate run_id": json.dumps([GOOD, GOOD]).encode(),
    "bad timestamp": json.dumps([{**GOOD, "timestamp": "yesterday"}]).encode(),
    "not UTF-8": b"\xff\xfe[]",
    "empty file": b"",
}


@pytest.mark.parametrize("kind", sorted(CORRUPT_FILES))
def test_corrupt_registry_fails_reads_and_writes_and_is_left_untouched(registry, reg_path, kind):
    registry.register(make_entry("old"))
    registry.register(make_entry("older"))
    bak_before = reg_path.with_name("model_registry.json.bak").read_bytes()
    reg_path.write_bytes(CORRUPT_FILES[kind])
    for call in (lambda r: r.list_entries(), lambda r: r.get_entry("a"), lambda r: r.register(make_entry("new")),
                 lambda r: r.remove_entry("a"), lambda r: r.find_best_entry_by_metric(TASK, "best_val_metric")):
        with pytest.raises(RegistryCorruptError) as info:
            call(ModelRegistry(reg_path))
        message = str(info.value)
        assert str(reg_path) in message and "street-scene registry rebuild" in message and "\n" not in message
    assert isinstance(info.value, UserError)
    assert reg_path.read_bytes() == CORRUPT_FILES[kind]
    assert reg_path.with_name("model_registry.json.bak").read_bytes() == bak_before


def test_lock_timeout_is_a_clear_user_error(registry, reg_path):
    from filelock import FileLock

    reg_path.parent.mkdir(parents=True)
    with FileLock(str(reg_path) + ".lock", preserve_lock_file=True):
        with pytest.raises(RegistryLockedError, match="locked by another process"):
            ModelRegistry(reg_path, lock_timeout=0.2).register(make_entry("a"))
    registry.register(make_entry("a"))
    assert len(registry) == 1


# ---- run directories: build_entry, rebuild, verify -----------------------------------------------------------
def test_build_entry_from_a_run_dir(tmp_path):
    run_dir = make_run_dir(tmp_path / "outputs", "20240115_143022_v1", metrics={"best_val_metric": 0.92},
                           finished_at=datetime(2024, 1, 15, 14, 30, 22, 123456))  # dumped as '2024-01-15 14:30:22...'
    entry = build_entry(run_dir)
    assert entry["run_id"] == "20240115_143022_v1" and entry["task"] == TASK and entry["status"] == "completed"
    assert entry["checkpoint_path"] == str(run_dir / "best_model.pth")
    assert entry["config_path"] == str(run_dir / "config.yaml") and entry["run_dir"] == str(run_dir)
    assert entry["checkpoint_sha256"] == hashlib.sha256(b"weights of 20240115_143022_v1").hexdigest()
    assert entry["timestamp"] == "2024-01-15T14:30:22.123456"
    assert entry["metrics"] == {"best_val_metric": 0.92}
    assert entry["metadata"]["pytorch_version"] == "2.14.1" and entry["metadata"]["seed"] == 42
    assert entry["metadata"]["git_commit"] == "abc123def456" and entry["metadata"]["git_dirty"] is False
    assert entry["dataset"] is None
    stored = ModelRegistry(tmp_path / "r.json").register(entry)
    assert stored["config_hash"] == entry["config_hash"]


@pytest.mark.parametrize("status", ["running", "failed"])
def test_build_entry_refuses_unfinished_runs(tmp_path, status):
    run_dir = make_run_dir(tmp_path, "20240115_143022_x", status=status)
    with pytest.raises(UserError, match=f"status '{status}'"):
        build_entry(run_dir)


def test_build_entry_of_a_non_run_dir(tmp_path):
    with pytest.raises(UserError, match="not a street-scene run directory"):
        build_entry(tmp_path)


def _train_runs(outputs: Path, registry: ModelRegistry):
    """Completed runs registered as training does, plus a running and a failed one (never registered)."""
    for i, (name, task) in enumerate([("20240101_000000_a", TASK), ("20240102_000000_b", "pedestrian_detection"),
                                      ("20240103_000000_c", TASK)]):
        run_dir = make_run_dir(outputs, name, task=task, metrics={"best_val_metric": 0.1 * (i + 1)},
                               finished_at=f"2024-01-0{i + 1}T12:00:00")
        registry.register(build_entry(run_dir))
    make_run_dir(outputs, "20240104_000000_running", status="running")
    make_run_dir(outputs, "20240105_000000_failed", status="failed")


def test_corruption_then_rebuild_recovers_every_registered_entry(tmp_path, registry, reg_path):
    _train_runs(tmp_path / "outputs", registry)
    registered = registry.list_entries()
    truncated = reg_path.read_text()[:200]  # e.g. a copy cut short by a full disk, outside our writer
    reg_path.write_text(truncated)
    with pytest.raises(RegistryCorruptError):
        ModelRegistry(reg_path).list_entries()

    report = ModelRegistry(reg_path).rebuild(tmp_path / "outputs")
    assert ModelRegistry(reg_path).list_entries() == registered
    assert report.moved_aside.read_text() == truncated  # moved aside, never deleted
    assert report.moved_aside.name.startswith("model_registry.json.corrupt-")
    assert sorted(p.name for p, _ in report.skipped) == ["20240104_000000_running", "20240105_000000_failed"]
    assert all("status" in why for _, why in report.skipped)
    assert report.dropped == []


def test_rebuild_uses_the_output_dir_env_and_reports_dropped_entries(isolated_env):
    registry = ModelRegistry()
    _train_runs(isolated_env / "outputs", registry)
    registry.register(make_entry("registered_by_hand"))
    before = registry.path.read_bytes()
    report = registry.rebuild()
    assert report.outputs_dir == isolated_env / "outputs" and report.moved_aside is None
    assert report.dropped == ["registered_by_hand"]
    assert [e["run_id"] for e in registry.list_entries()] == ["20240101_000000_a", "20240102_000000_b",
                                                              "20240103_000000_c"]
    assert registry.path.with_name("model_registry.json.bak").read_bytes() == before


def test_rebuild_without_an_outputs_dir_is_a_user_error(tmp_path, registry):
    with pytest.raises(UserError, match="outputs directory .* not found"):
        registry.rebuild(tmp_path / "nope")


def test_verify_reports_missing_tampered_and_reconfigured_runs(tmp_path, registry):
    _train_runs(tmp_path / "outputs", registry)
    assert all(r.ok for r in registry.verify())
    a, b, c = (Path(e["run_dir"]) for e in registry.list_entries())
    (a / "best_model.pth").write_bytes(b"retrained in place")
    (b / "best_model.pth").unlink()
    (c / "config.yaml").write_text(dump_yaml({"model": {"name": "yolov8s"}, "seed": 42}))
    results = {r.run_id: r for r in registry.verify()}
    assert results[a.name].sha256.startswith("mismatch") and results[a.name].config_hash == "ok"
    assert results[b.name].checkpoint.startswith("missing") and results[b.name].config_hash == "ok"
    assert results[c.name].config_hash.startswith("mismatch") and results[c.name].sha256 == "ok"
    assert not any(r.ok for r in results.values())


def test_threads_sharing_an_instance_lose_nothing(registry, reg_path):
    other = ModelRegistry(reg_path)

    def work(reg, prefix):
        for j in range(10):
            reg.register(make_entry(f"{prefix}{j}"))
            assert reg.get_entry(f"{prefix}{j}")["run_id"] == f"{prefix}{j}"

    threads = [threading.Thread(target=work, args=(reg, f"t{k}_")) for k, reg in
               enumerate([registry, registry, registry, other])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(ModelRegistry(reg_path)) == 40


# ---- many processes, killed writers ---------------------------------------------------------------------------
WORKER = """
import sys, time
from pathlib import Path
from src.common.model_registry import ModelRegistry
path, worker, count, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
registry = ModelRegistry(path, lock_timeout=120)
while not go.exists():
    time.sleep(0.005)
for j in range(count):
    run_id = f"w{worker}_{j:03d}"
    registry.register({"run_id": run_id, "task": "vehicle_detection", "config_hash": "abc123de",
                       "checkpoint_path": f"/runs/{run_id}/best_model.pth", "metrics": {"best_val_metric": j},
                       "metadata": {}})
    assert registry.get_entry(run_id)["run_id"] == run_id
    assert len(ModelRegistry(path)) >= j + 1  # a fresh reader always sees a whole, valid file
"""


@pytest.mark.slow
def test_many_processes_registering_at_once_lose_nothing(registry, reg_path, tmp_path):
    registry.register(make_entry("existing"))
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(reg_path), str(w), "25", str(go)],
                              cwd=REPO_ROOT, env=subprocess_env(), stderr=subprocess.PIPE, text=True)
             for w in range(4)]
    time.sleep(0.5)
    go.touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    ids = [e["run_id"] for e in json.loads(reg_path.read_text())]
    assert len(ids) == 101 and len(set(ids)) == 101
    assert set(ids) == {"existing"} | {f"w{w}_{j:03d}" for w in range(4) for j in range(25)}


KILLED_WRITER = """
import sys, time
from src.common import registry_splice
from src.common.model_registry import ModelRegistry
path, ready = sys.argv[1], sys.argv[2]
copy_range = registry_splice.copy_range

def copy_half_then_hang(src, out, offset, length):
    copy_range(src, out, offset, length // 2)
    open(ready, "w").close()
    time.sleep(120)  # SIGKILLed here, half-way through writing the new registry

registry_splice.copy_range = copy_half_then_hang
ModelRegistry(path).register({"run_id": "doomed", "task": "vehicle_detection", "config_hash": "abc123de",
                              "checkpoint_path": "/runs/doomed/best_model.pth", "metrics": {"x": [0.5] * 500},
                              "metadata": {}})
"""


@pytest.mark.slow
def test_writer_killed_mid_write_leaves_the_previous_valid_file(registry, reg_path, tmp_path):
    registry.register_many([make_entry("a"), make_entry("b")])
    before = reg_path.read_bytes()
    ready = tmp_path / "ready"
    proc = start_until_ready(KILLED_WRITER, reg_path, ready, ready=ready)
    partial = [p for p in reg_path.parent.iterdir() if p.name.endswith(".tmp")]
    assert len(partial) == 1 and 0 < partial[0].stat().st_size  # it really was half-way through a write
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)  # reaps it and closes the stderr pipe
    assert proc.returncode == -signal.SIGKILL
    assert reg_path.read_bytes() == before
    survivor = ModelRegistry(reg_path, lock_timeout=5)  # and the dead writer's lock is gone
    assert [e["run_id"] for e in survivor.list_entries()] == ["a", "b"]
    survivor.register(make_entry("c"))
    assert not partial[0].exists()  # the next writer cleans up after the dead one
    assert [e["run_id"] for e in ModelRegistry(reg_path).list_entries()] == ["a", "b", "c"]


# ---- hardening: what the .bak is called, where checkpoints may point ------------------------------------------
def test_corrupt_error_names_the_bak_only_when_it_is_a_valid_registry(registry, reg_path):
    registry.register(make_entry("a"))
    registry.register(make_entry("b"))
    bak = reg_path.with_name("model_registry.json.bak")
    reg_path.write_text("[")
    with pytest.raises(RegistryCorruptError, match=r"the last good version is .*model_registry\.json\.bak"):
        registry.list_entries()
    for bad_bak in (b"[{", b"[NaN]", b"", b"\xff"):
        bak.write_bytes(bad_bak)
        with pytest.raises(RegistryCorruptError) as info:
            ModelRegistry(reg_path).list_entries()
        assert "last good version" not in str(info.value) and ".bak" not in str(info.value)
    bak.unlink()
    with pytest.raises(RegistryCorruptError) as info:
        ModelRegistry(reg_path).list_entries()
    assert "last good version" not in str(info.value)


@pytest.mark.parametrize("checkpoint", ["../../etc/passwd", "/etc/passwd", "../20240101_000000_other/best_model.pth",
                                        "sub/best_model.pth", "..", ".", "a\\b.pth", 5, ["best_model.pth"]])
def test_rebuild_skips_a_run_whose_checkpoint_points_outside_it(tmp_path, registry, checkpoint):
    outputs = tmp_path / "outputs"
    make_run_dir(outputs, "20240101_000000_good")
    evil = make_run_dir(outputs, "20240102_000000_evil")
    meta = (evil / "metadata.yaml").read_text().replace("checkpoint: best_model.pth",
                                                        f"checkpoint: {json.dumps(checkpoint)}")
    (evil / "metadata.yaml").write_text(meta)
    with pytest.raises(UserError, match="is not a file name inside the run directory"):
        build_entry(evil)
    report = registry.rebuild(outputs)
    assert [e["run_id"] for e in registry.list_entries()] == ["20240101_000000_good"]
    [(skipped, why)] = report.skipped
    assert skipped == evil and "result.checkpoint" in why


def test_rebuild_skips_a_checkpoint_symlink_that_leaves_the_run_dir(tmp_path, registry):
    outputs = tmp_path / "outputs"
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"not yours")
    evil = make_run_dir(outputs, "20240102_000000_evil")
    (evil / "best_model.pth").unlink()
    (evil / "best_model.pth").symlink_to(secret)
    inside = make_run_dir(outputs, "20240103_000000_linked")
    (inside / "weights.pth").write_bytes((inside / "best_model.pth").read_bytes())
    (inside / "best_model.pth").unlink()
    (inside / "best_model.pth").symlink_to("weights.pth")  # a link that stays inside the run dir is fine
    report = registry.rebuild(outputs)
    assert [e["run_id"] for e in registry.list_entries()] == ["20240103_000000_linked"]
    [(skipped, why)] = report.skipped
    assert skipped == evil and "leads outside the run directory" in why and str(secret) in why


def test_rebuild_skips_runs_with_non_finite_metrics_naming_the_metric(tmp_path, registry):
    outputs = tmp_path / "outputs"
    run = make_run_dir(outputs, "20240101_000000_diverged")
    meta = (run / "metadata.yaml").read_text().replace("best_val_metric: 0.5", "best_val_metric: .nan")
    (run / "metadata.yaml").write_text(meta)
    report = registry.rebuild(outputs)
    assert registry.list_entries() == []
    [(_, why)] = report.skipped
    assert "metrics.best_val_metric is nan" in why
