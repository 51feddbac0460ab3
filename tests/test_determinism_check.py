"""`street-scene check-determinism` (src/pipelines/determinism_check.py): two trainings in fresh processes."""

import json
from pathlib import Path

import pytest

from src.cli.main import main
from src.common.config_manager import ConfigManager
from src.common.yaml_io import dump_yaml, load_yaml
from src.pipelines.compare import compare_runs
from src.pipelines.determinism_check import LABELS, format_report
from tests.helpers import subprocess_env

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "detection_config.yaml"
# batch 64 > 8 images: one optimizer step per epoch (see tests/test_reproduce.py), so the epoch really trains.
OVERRIDES = ["device=cpu", "detection.training.epochs=2", "detection.training.batch_size=64",
             "detection.training.image_size=64", "detection.training.warmup_epochs=0"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from src.data.synthetic import make_detection_dataset

    out = tmp_path_factory.mktemp("det") / "data"
    make_detection_dataset("vehicle_detection", out, 8, 4, 0, seed=3, image_size=64)
    return out


def command(dataset, *extra):
    argv = ["check-determinism", "--config", str(CONFIG), "--task", "detection", "--detection-task",
            "vehicle_detection", "--train-data", str(dataset / "train"), "--val-data", str(dataset / "val")]
    for override in OVERRIDES:
        argv += ["--config-override", override]
    return argv + list(extra)


def make_run_dir(root: Path, config_hash: str) -> Path:
    run = root / "20250101_000000_target"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 42\n")
    (run / "metadata.yaml").write_text(dump_yaml({"run_id": run.name, "status": "completed",
                                                  "config_hash": config_hash, "seed": 42}))
    return run


@pytest.mark.slow
def test_cpu_training_is_bitwise_and_recorded(dataset, isolated_env, monkeypatch, capsys):
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])  # the training processes: network blocked
    config_hash = ConfigManager(CONFIG, OVERRIDES).get_config_hash()
    run = make_run_dir(isolated_env / "runs", config_hash)

    assert main(command(dataset, "--record", str(run), "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["label"] == "bitwise" and report["weights_equal"] is True
    assert report["epochs"] == 1 and report["config_hash"] == config_hash and report["seed"] == 42
    assert report["settings"]["deterministic_algorithms"] is True and report["settings_second_run"] is None
    assert report["device"] == "cpu"
    assert [w["checkpoint"] for w in report["comparison"]["weights"]["compared"]] == [
        "checkpoint_epoch_1.pth", "best_model.pth"]
    meta = load_yaml(run / "metadata.yaml")
    assert meta["determinism_check"]["label"] == "bitwise" and meta["determinism_check"]["matches_run_config"]
    assert meta["status"] == "completed" and meta["config_hash"] == config_hash  # the rest is untouched
    # nothing was written to the user's output root or registry
    assert not (isolated_env / "outputs").exists()
    assert not (isolated_env / "registry").exists()
    text = format_report(report)
    assert text.startswith("determinism: bitwise") and "deterministic_algorithms: True" in text


@pytest.mark.parametrize("extra, message", [
    (["--record", "20990101_000000_nope"], "unknown run"),
    (["--epochs", "0"], "--epochs must be a positive integer"),
    (["--rtol", "-1"], "--rtol must be a finite number"),
])
def test_bad_input_fails_before_training(dataset, isolated_env, capsys, extra, message):
    assert main(command(dataset, *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_missing_data_fails_before_training(isolated_env, capsys):
    argv = command(isolated_env / "nowhere")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere" in err, err


def _fake_run(root: Path, name: str, loss: float, weight: float) -> Path:
    import torch

    from src.common.checkpoint import build_checkpoint, save_checkpoint

    run = root / name
    run.mkdir()
    (run / "metrics.csv").write_text(f"epoch,loss,epoch_time\n1,{loss},{weight}\n")
    ckpt = build_checkpoint(task="detection", subtask="t", model_state={"w": torch.full((3,), weight)},
                            model_spec={}, epoch=1, metrics={}, config={}, config_hash="0" * 8, metadata={})
    for name in ("checkpoint_epoch_1.pth", "best_model.pth"):
        save_checkpoint(run / name, ckpt)
    return run


@pytest.mark.parametrize("loss, weight, label", [
    (1.0, 1.0, "bitwise"), (1.0, 1.5, "within tolerance"), (1.0 + 1e-9, 1.0, "within tolerance"),
    (1.1, 1.0, "nondeterministic"),
])
def test_labels(tmp_path, loss, weight, label):
    a, b = _fake_run(tmp_path, "a", 1.0, 1.0), _fake_run(tmp_path, "b", loss, weight)
    assert LABELS[compare_runs(a, b, 1e-6, 0.0)["verdict"]] == label
