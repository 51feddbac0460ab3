"""`diff_runs` / `street-scene diff` on hand-made run directories (the ARCHITECTURE.md run dir contract)."""

import copy
import json

import pytest

from src.cli.main import main
from src.common.errors import UserError
from src.common.run_diff import diff_runs, format_diff
from src.common.yaml_io import dump_yaml

CONFIG = {"model": {"architecture": "yolov8n", "imgsz": 64}, "train": {"epochs": 2, "lr": 0.01}, "seed": 42}
FINGERPRINT = {"version": 1, "files": 8, "bytes": 4100, "sha256": "a" * 64, "names": ["car", "bus"]}
METADATA = {
    "run_id": "20240101_120000_base", "run_name": "base", "status": "completed", "task": "detection",
    "subtask": "vehicle_detection", "config_hash": "1234abcd", "seed": 42, "seed_source": "config",
    "started_at": "2024-01-01T12:00:00.000001", "finished_at": "2024-01-01T12:05:00.000001",
    "data": {"train": "/data/images/train", "val": "/data/images/val"},
    "data_fingerprints": {"train": FINGERPRINT, "val": FINGERPRINT},
    "pytorch_version": "2.14.1", "ultralytics_version": "8.4.190", "device": "cpu", "hostname": "box",
    "git_commit": "c0ffee", "git_dirty": False, "determinism": {"deterministic": True, "cudnn_benchmark": False},
    "result": {"checkpoint": "best_model.pth", "checkpoint_sha256": "b" * 64,
               "metrics": {"val/mAP50": 0.5, "best_val_metric": 0.25, "train_time_s": 12.5}},
}
ROWS = [{"epoch": 1, "train/loss": 2.0, "val/mAP50": 0.1, "epoch_time": 3.1},
        {"epoch": 2, "train/loss": 1.5, "val/mAP50": 0.5, "epoch_time": 2.9}]


def make_run(root, name, config=CONFIG, metadata=METADATA, rows=ROWS, env=("numpy==2.1.0", "torch==2.14.1"),
             git_diff=None):
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_yaml(config))
    (run / "metadata.yaml").write_text(dump_yaml({**metadata, "run_id": name}))
    if rows is not None:
        cols = list(rows[0]) if rows else ["epoch"]
        lines = [",".join(cols)] + [",".join(str(r.get(c, "")) for c in cols) for r in rows]
        (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    if env is not None:
        (run / "environment.txt").write_text("".join(line + "\n" for line in env))
    if git_diff is not None:
        (run / "git.diff").write_text(git_diff)
    return run


def changed(**updates):
    meta = copy.deepcopy(METADATA)
    meta.update(updates)
    return meta


def test_runs_differing_only_in_ids_and_times_are_identical(tmp_path):
    a = make_run(tmp_path, "a")
    b = make_run(tmp_path, "b", metadata=changed(started_at="2025-02-02T00:00:00", finished_at=None),
                 rows=[{**r, "epoch_time": 99.0} for r in ROWS])
    diff = diff_runs(a, b)
    assert diff["identical"] is True
    assert (diff["config"], diff["metadata"], diff["metrics"], diff["environment"]) == ([], [], [], [])
    assert format_diff(diff).splitlines()[-1].startswith("no differences")


def test_config_differences_as_dotted_keys(tmp_path):
    config_b = copy.deepcopy(CONFIG)
    config_b["train"]["lr"] = 0.02
    config_b["train"]["momentum"] = 0.9
    del config_b["model"]["imgsz"]
    diff = diff_runs(make_run(tmp_path, "a"), make_run(tmp_path, "b", config=config_b))
    assert diff["config"] == [
        {"key": "model.imgsz", "change": "removed", "a": 64},
        {"key": "train.lr", "change": "changed", "a": 0.01, "b": 0.02},
        {"key": "train.momentum", "change": "added", "b": 0.9},
    ]
    text = format_diff(diff)
    assert "config (3):\n  model.imgsz: 64 -> <missing>\n  train.lr: 0.01 -> 0.02\n  train.momentum: <missing> -> 0.9" \
        in text
    assert diff["identical"] is False


def test_metadata_differences(tmp_path):
    fp_b = {**FINGERPRINT, "sha256": "c" * 64}
    meta_b = changed(git_commit="deadbeef", git_dirty=True, seed=7, device="cuda:0", pytorch_version="2.15.0",
                     data={"train": "/other/images/train", "val": "/data/images/val"},
                     data_fingerprints={"train": fp_b, "val": FINGERPRINT},
                     determinism={"deterministic": False, "cudnn_benchmark": False})
    diff = diff_runs(make_run(tmp_path, "a"), make_run(tmp_path, "b", metadata=meta_b, git_diff="+ x = 1\n"))
    keys = {c["key"]: (c.get("a"), c.get("b")) for c in diff["metadata"]}
    assert keys == {
        "data.train": ("/data/images/train", "/other/images/train"),
        "data_fingerprints.train.sha256": ("a" * 64, "c" * 64),
        "determinism.deterministic": (True, False),
        "device": ("cpu", "cuda:0"),
        "git_commit": ("c0ffee", "deadbeef"),
        "git_dirty": (False, True),
        "git_diff_sha256": (None, keys["git_diff_sha256"][1]),
        "pytorch_version": ("2.14.1", "2.15.0"),
        "seed": (42, 7),
    }
    assert len(keys["git_diff_sha256"][1]) == 64
    assert "  git_commit: c0ffee -> deadbeef" in format_diff(diff).splitlines()


def test_different_uncommitted_changes_at_one_commit_are_reported(tmp_path):
    meta = changed(git_dirty=True)
    diff = diff_runs(make_run(tmp_path, "a", metadata=meta, git_diff="+ a\n"),
                     make_run(tmp_path, "b", metadata=meta, git_diff="+ b\n"))
    assert [c["key"] for c in diff["metadata"]] == ["git_diff_sha256"]


def test_final_and_epoch_metric_differences(tmp_path):
    meta_b = changed(result={**METADATA["result"], "checkpoint_sha256": "d" * 64,
                             "metrics": {"val/mAP50": 0.75, "best_val_metric": 0.25, "train_time_s": 1.0,
                                         "val/recall": 0.1}})
    rows_b = [ROWS[0], {**ROWS[1], "val/mAP50": 0.6}, {"epoch": 3, "train/loss": 1.0, "val/mAP50": 0.7}]
    diff = diff_runs(make_run(tmp_path, "a"), make_run(tmp_path, "b", metadata=meta_b, rows=rows_b))
    assert diff["metrics"] == [
        {"key": "val/mAP50", "change": "changed", "a": 0.5, "b": 0.75, "delta": 0.25},
        {"key": "val/recall", "change": "added", "b": 0.1},
    ]
    assert [c["key"] for c in diff["metadata"]] == ["result.checkpoint_sha256"]
    epochs = diff["epochs"]
    assert (epochs["epochs_a"], epochs["epochs_b"], epochs["only_b"]) == (2, 3, [3])
    assert epochs["first_difference_epoch"] == 2
    assert epochs["differences"] == [{"epoch": 2, "key": "val/mAP50", "a": 0.5, "b": 0.6}]
    text = format_diff(diff)
    assert "  val/mAP50: 0.5 -> 0.75 (+0.25)" in text.splitlines()
    assert "  epoch 2 val/mAP50: 0.5 -> 0.6" in text.splitlines()
    assert "train_time_s" not in text and "epoch_time" not in text


def test_nan_metric_in_both_runs_is_not_a_difference(tmp_path):
    rows = [{"epoch": 1, "val/loss": "nan"}]
    diff = diff_runs(make_run(tmp_path, "a", rows=rows), make_run(tmp_path, "b", rows=rows))
    assert diff["epochs"]["differences"] == [] and diff["identical"]


def test_missing_metrics_csv_and_long_traces(tmp_path):
    diff = diff_runs(make_run(tmp_path, "a"), make_run(tmp_path, "b", rows=None))
    assert "  metrics.csv only in A" in format_diff(diff).splitlines()
    assert diff["identical"] is False
    rows_a = [{"epoch": e, "loss": 1.0} for e in range(1, 31)]
    rows_b = [{"epoch": e, "loss": 2.0} for e in range(1, 31)]
    diff = diff_runs(make_run(tmp_path, "c", rows=rows_a), make_run(tmp_path, "d", rows=rows_b))
    assert len(diff["epochs"]["differences"]) == 30
    assert "  ... and 10 more (use --json for all)" in format_diff(diff).splitlines()


def test_environment_differences(tmp_path):
    diff = diff_runs(make_run(tmp_path, "a"),
                     make_run(tmp_path, "b", env=("numpy==2.2.0", "pillow==11.0", "torch==2.14.1")))
    assert diff["environment"] == ["numpy: 2.1.0 -> 2.2.0", "pillow: <missing> -> 11.0"]


def test_run_ids_resolve_under_output_root(tmp_path, monkeypatch):
    outputs = tmp_path / "outputs"
    a, b = make_run(outputs, "20240101_120000_a"), make_run(outputs, "20240101_120001_b")
    monkeypatch.setenv("STREET_SCENE_OUTPUT_DIR", str(outputs))
    diff = diff_runs("20240101_120000_a", "20240101_120001_b")
    assert (diff["run_a"], diff["run_b"]) == (str(a.resolve()), str(b.resolve()))


def test_bad_runs_are_user_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("STREET_SCENE_OUTPUT_DIR", str(tmp_path / "outputs"))
    good = make_run(tmp_path, "good")
    with pytest.raises(UserError, match="unknown run 'nope'"):
        diff_runs(good, "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("a: 1\n")
    with pytest.raises(UserError, match="missing metadata.yaml"):
        diff_runs(good, tmp_path / "half")
    (tmp_path / "half" / "metadata.yaml").write_text("run_id: half\n")
    (tmp_path / "half" / "config.yaml").write_text("- a list\n")
    with pytest.raises(UserError, match="config.yaml is not a mapping"):
        diff_runs(good, tmp_path / "half")


def test_cli_json_exits_0_when_runs_differ(tmp_path, capsys):
    a, b = make_run(tmp_path, "a"), make_run(tmp_path, "b", metadata=changed(seed=1))
    assert main(["diff", str(a), str(b), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["identical"] is False
    assert shown["metadata"] == [{"key": "seed", "change": "changed", "a": 42, "b": 1}]
    assert main(["diff", str(a), str(b)]) == 0
    assert "  seed: 42 -> 1" in capsys.readouterr().out.splitlines()


def test_cli_unknown_run_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STREET_SCENE_OUTPUT_DIR", str(tmp_path))
    assert main(["diff", "missing_a", "missing_b"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown run 'missing_a'") and err.count("\n") == 1
