"""End-to-end tests of segmentation through scripts/train.py, scripts/evaluate.py and StreetScenePipeline,
run exactly as the README calls them, on tiny synthetic road scenes on CPU."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers import REPO_ROOT, run_script, subprocess_env
from segmentation_e2e_support import (CONFIG, DATA_YAML, OVERRIDES, SEED, SUBTASK, env_for, error_lines, eval_args,
                                      make_workspace, registry_entries, run_id_from, train_args, weights_sha)
from src.common.checkpoint import FORMAT_VERSION, REQUIRED_KEYS, file_sha256
from src.common.config_manager import ConfigManager
from src.common.yaml_io import load_yaml
from src.common.run_dir import read_metrics_csv

pytestmark = pytest.mark.slow

NAMES = ["road", "sidewalk", "building", "vegetation", "sky", "vehicle", "person", "traffic_sign"]
RUN_FILES = {"config.yaml", "overrides.yaml", "metadata.yaml", "environment.txt", "train.log", "metrics.csv",
             "training_curves.png", "best_model.pth", "checkpoint_epoch_1.pth", "checkpoint_epoch_2.pth"}


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)  # the format promises weights-only loading


def entries_for(root: Path, run_id: str) -> list:
    return [e for e in registry_entries(root) if e["run_id"] == run_id]


@pytest.fixture(autouse=True)
def no_env_seed(monkeypatch):
    monkeypatch.delenv("STREET_SCENE_SEED", raising=False)  # ConfigManager here must resolve seeds as the runs did


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("seg_e2e") / "ws")


@pytest.fixture(scope="module")
def base_run(ws):
    """The issue's train command, verbatim (2 epochs, --seed 42)."""
    proc = run_script("train.py", *train_args("seg_e2e"), cwd=ws, env=env_for(ws))
    assert proc.returncode == 0, proc.stderr
    run_id = run_id_from(proc.stdout)
    return SimpleNamespace(id=run_id, dir=ws / "outputs" / run_id, stdout=proc.stdout)


@pytest.fixture(scope="module")
def api_run(ws):
    """The same training and an evaluation through StreetScenePipeline, in this process."""
    from src.pipelines.pipeline import StreetScenePipeline

    with pytest.MonkeyPatch.context() as mp:
        for key, value in env_for(ws).items():
            mp.setenv(key, value)
        mp.chdir(ws)
        pipeline = StreetScenePipeline(ws / CONFIG, "segmentation", segmentation_task=SUBTASK,
                                       overrides=list(OVERRIDES), seed=SEED)
        trained = pipeline.train(ws / "data/train", ws / "data/val", data_yaml=str(ws / DATA_YAML),
                                 run_name="seg_api")
        metrics = pipeline.evaluate(ws / "data/val", trained["checkpoint_path"], data_yaml=str(ws / DATA_YAML),
                                    verify_config=True)
    return SimpleNamespace(trained=trained, eval_metrics=metrics, dir=Path(trained["run_dir"]))


def test_train_command_writes_the_documented_run_dir(base_run):
    assert RUN_FILES <= {p.name for p in base_run.dir.iterdir()}
    meta = load_yaml(base_run.dir / "metadata.yaml")
    assert (meta["run_id"], meta["status"], meta["task"], meta["subtask"]) == (
        base_run.id, "completed", "segmentation", SUBTASK)
    assert (meta["seed"], meta["seed_source"], meta["world_size"]) == (SEED, "cli", 1)
    assert meta["result"]["checkpoint"] == "best_model.pth"
    assert meta["result"]["checkpoint_sha256"] == file_sha256(base_run.dir / "best_model.pth")
    config = load_yaml(base_run.dir / "config.yaml")
    assert config["seed"] == SEED and config["segmentation"]["training"]["crop_size"] == [64, 64]
    assert meta["config_hash"] == ConfigManager(base_run.dir / "config.yaml").get_config_hash()
    assert load_yaml(base_run.dir / "overrides.yaml") == list(OVERRIDES)
    log = (base_run.dir / "train.log").read_text()
    assert "epoch 1/2: train/loss=" in log and "epoch 2/2: train/loss=" in log
    assert (base_run.dir / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_csv_has_miou_per_class_iou_and_pixel_accuracy(base_run):
    rows = read_metrics_csv(base_run.dir / "metrics.csv")
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        scores = [row["val/mIoU"], row["val/pixel_accuracy"]] + [row[f"val/IoU_{n}"] for n in NAMES]
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert row["val/mIoU"] == pytest.approx(sum(row[f"val/IoU_{n}"] for n in NAMES) / len(NAMES))
        assert row["train/loss"] > 0 and row["val/loss"] > 0


def test_checkpoints_use_the_shared_weights_only_format(base_run):
    meta = load_yaml(base_run.dir / "metadata.yaml")
    best, last = load(base_run.dir / "best_model.pth"), load(base_run.dir / "checkpoint_epoch_2.pth")
    for ckpt in (best, last):
        assert set(REQUIRED_KEYS) <= set(ckpt) and ckpt["format_version"] == FORMAT_VERSION
        assert (ckpt["task"], ckpt["subtask"]) == ("segmentation", SUBTASK)
        assert ckpt["model_spec"] == {"architecture": "lraspp_mobilenet_v3_large", "names": NAMES,
                                      "num_classes": 8, "ignore_index": 255,
                                      "preprocessing": {"color": "RGB", "scale": 1 / 255,  # ImageNet's
                                                        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
        assert ckpt["config_hash"] == meta["config_hash"]
        assert ckpt["config"] == load_yaml(base_run.dir / "config.yaml")
        assert ckpt["metadata"]["run_id"] == base_run.id
        assert all(t.dtype != torch.float16 for t in ckpt["model_state"].values())
    assert "train_state" not in best  # best_model.pth is for evaluation, epoch checkpoints are for resuming
    assert {"optimizer", "scheduler", "rng", "data_position"} <= set(last["train_state"])
    best_epoch = meta["result"]["metrics"]["best_epoch"]
    assert best["epoch"] == best_epoch
    assert weights_sha(base_run.dir / "best_model.pth") == weights_sha(
        base_run.dir / f"checkpoint_epoch_{best_epoch}.pth")


def test_registry_entry_records_best_val_miou(base_run, ws):
    [entry] = entries_for(ws, base_run.id)
    rows = read_metrics_csv(base_run.dir / "metrics.csv")
    assert entry["task"] == SUBTASK
    assert entry["metrics"]["best_val_metric"] == max(row["val/mIoU"] for row in rows)
    best_row = rows[entry["metrics"]["best_epoch"] - 1]
    for name in ("val/mIoU", "val/pixel_accuracy", "val/loss"):  # one name per metric: registry = metrics.csv
        assert entry["metrics"][name] == best_row[name]
    assert entry["checkpoint_path"] == str((base_run.dir / "best_model.pth").resolve())
    assert entry["config_hash"] == load_yaml(base_run.dir / "metadata.yaml")["config_hash"]


def test_evaluate_with_matching_config_verifies_and_reproduces_val_miou(base_run, ws):
    ckpt = f"outputs/{base_run.id}/best_model.pth"
    proc = run_script("evaluate.py", *eval_args(ckpt, "data/val", "--verify-config", "--json"), cwd=ws,
                      env=env_for(ws))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # --json keeps stdout pure JSON
    metrics = result["metrics"]
    config_hash = load_yaml(base_run.dir / "metadata.yaml")["config_hash"]
    assert f"Config hash verified: {config_hash}" in proc.stderr
    assert "mismatch" not in proc.stdout + proc.stderr
    best = load(base_run.dir / "best_model.pth")["metrics"]
    assert metrics["test/mIoU"] == pytest.approx(best["val/mIoU"], abs=1e-9)
    assert metrics["test/pixel_accuracy"] == pytest.approx(best["val/pixel_accuracy"], abs=1e-9)
    assert list(result["per_class"]) == NAMES
    for name in NAMES:
        assert result["per_class"][name]["test/IoU"] == pytest.approx(best[f"val/IoU_{name}"], abs=1e-9)
    assert list((base_run.dir / "evaluations").glob("*_best_model.json"))


def test_evaluate_with_changed_config_prints_the_mismatch_and_the_key(base_run, ws):
    changed = (*OVERRIDES, "segmentation.training.learning_rate=0.02")
    proc = run_script("evaluate.py", *eval_args(f"outputs/{base_run.id}/best_model.pth", "data/test",
                                                "--verify-config", overrides=changed), cwd=ws, env=env_for(ws))
    assert proc.returncode == 0, proc.stderr
    old = load_yaml(base_run.dir / "metadata.yaml")["config_hash"]
    new = ConfigManager(ws / CONFIG, list(changed)).get_config_hash()
    lines = proc.stdout.splitlines()
    assert (f"Config hash mismatch! Checkpoint config hash: {old}, Current config hash: {new}. "
            "This may affect reproducibility.") in lines
    assert "  segmentation.training.learning_rate: 0.01 -> 0.02" in lines
    assert any(line.startswith("Evaluation results (") for line in lines)
    assert any(line.startswith("  test/mIoU: ") for line in lines)


def test_pipeline_api_trains_registers_and_evaluates(api_run, ws):
    trained = api_run.trained
    [entry] = entries_for(ws, trained["run_id"])
    assert entry["task"] == SUBTASK and entry["metrics"]["best_val_metric"] == trained["metrics"]["best_val_metric"]
    assert Path(trained["checkpoint_path"]) == api_run.dir / "best_model.pth"
    assert api_run.eval_metrics["metrics"]["test/mIoU"] == pytest.approx(trained["metrics"]["best_val_metric"],
                                                                         abs=1e-9)


def test_same_seed_same_weights_different_seed_different(base_run, api_run, ws):
    for name in ("checkpoint_epoch_1.pth", "checkpoint_epoch_2.pth", "best_model.pth"):
        assert weights_sha(base_run.dir / name) == weights_sha(api_run.dir / name), name
    proc = run_script("train.py", *train_args("seg_seed7", seed=7), cwd=ws, env=env_for(ws))
    assert proc.returncode == 0, proc.stderr
    other = ws / "outputs" / run_id_from(proc.stdout)
    changes = ConfigManager(other / "config.yaml").diff(load_yaml(base_run.dir / "config.yaml"))
    assert changes == [("seed", SEED, 7)]
    assert weights_sha(other / "checkpoint_epoch_2.pth") != weights_sha(base_run.dir / "checkpoint_epoch_2.pth")


# ---- resume ------------------------------------------------------------------------------------------------------

def interrupt_after_epoch_1(ws: Path, run_name: str) -> Path:
    """Start the base run's command, press Ctrl-C (SIGINT) once checkpoint_epoch_1.pth exists; its run dir."""
    argv = [sys.executable, str(REPO_ROOT / "scripts" / "train.py"), *map(str, train_args(run_name))]
    proc = subprocess.Popen(argv, cwd=ws, env=subprocess_env(env_for(ws)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if list((ws / "outputs").glob(f"*_{run_name}/checkpoint_epoch_1.pth")):
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.02)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    [run_dir] = (ws / "outputs").glob(f"*_{run_name}")
    assert not (run_dir / "checkpoint_epoch_2.pth").exists(), "epoch 2 finished before the interrupt landed"
    return run_dir


def copy_run(base_run, root: Path, drop=()) -> Path:
    """A copy of the base run in its own output root (own registry), without the files in `drop`."""
    run_dir = root / "outputs" / base_run.id
    shutil.copytree(base_run.dir, run_dir)
    for name in drop:
        (run_dir / name).unlink()
    return run_dir


def assert_same_result(run_dir: Path, reference: Path) -> None:
    for name in ("checkpoint_epoch_2.pth", "best_model.pth"):
        assert weights_sha(run_dir / name) == weights_sha(reference / name), name
    assert (run_dir / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()


def test_resume_of_an_interrupted_run_ends_as_the_uninterrupted_run(base_run, ws):
    run_dir = interrupt_after_epoch_1(ws, "seg_killed")
    meta = load_yaml(run_dir / "metadata.yaml")
    assert (meta["status"], meta["error"]) == ("failed", "interrupted by SIGINT")
    assert entries_for(ws, run_dir.name) == []
    proc = run_script("train.py", *train_args("seg_killed", "--resume",
                                              f"outputs/{run_dir.name}/checkpoint_epoch_1.pth"),
                      cwd=ws, env=env_for(ws))
    assert proc.returncode == 0, proc.stderr
    assert run_id_from(proc.stdout) == run_dir.name
    assert_same_result(run_dir, base_run.dir)
    meta = load_yaml(run_dir / "metadata.yaml")
    assert meta["status"] == "completed" and "error" not in meta
    assert [(r["from_epoch"], r["previous_status"]) for r in meta["resumes"]] == [(1, "failed")]
    [entry] = entries_for(ws, run_dir.name)
    assert entry["metrics"]["best_val_metric"] == entries_for(ws, base_run.id)[0]["metrics"]["best_val_metric"]


def test_resume_by_run_id_accepts_a_safe_key_and_rebuilds_a_missing_best_model(base_run, tmp_path):
    # As if stopped between writing checkpoint_epoch_1.pth and best_model.pth (the run's own copy is older).
    run_dir = copy_run(base_run, tmp_path, drop=("checkpoint_epoch_2.pth", "best_model.pth"))
    ws = base_run.dir.parents[1]
    proc = run_script("train.py", "--config", run_dir / "config.yaml", "--task", "segmentation",
                      "--segmentation-task", SUBTASK, "--train-data", ws / "data/train", "--val-data",
                      ws / "data/val", "--data-yaml", ws / DATA_YAML, "--config-override",
                      "segmentation.training.workers=1", "--resume", base_run.id, cwd=tmp_path, env=env_for(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert run_id_from(proc.stdout) == base_run.id
    assert "Restored best_model.pth (epoch 1)" in proc.stdout  # epoch 1 is the best so far at any epoch-1 resume
    assert_same_result(run_dir, base_run.dir)
    assert load_yaml(run_dir / "metadata.yaml")["resumes"][-1]["changed_keys"] == ["segmentation.training.workers"]
    assert [e["run_id"] for e in registry_entries(tmp_path)] == [base_run.id]


@pytest.mark.parametrize("case", ["unsafe_key", "best_model", "older_epoch", "finished_run"])
def test_resume_refusals_change_nothing(base_run, tmp_path, case):
    drop = () if case in ("older_epoch", "finished_run") else ("checkpoint_epoch_2.pth",)
    run_dir = copy_run(base_run, tmp_path, drop=drop)
    overrides, ref, expected = OVERRIDES, base_run.id, {
        "unsafe_key": "segmentation.training.learning_rate: 0.01 -> 0.02",
        "best_model": "holds no training state",
        "older_epoch": "already has checkpoint_epoch_2.pth",
        "finished_run": "already trained all 2 epochs"}[case]
    if case == "unsafe_key":
        overrides = (*OVERRIDES, "segmentation.training.learning_rate=0.02")
    elif case == "best_model":
        ref = f"outputs/{base_run.id}/best_model.pth"
    elif case == "older_epoch":
        ref = f"outputs/{base_run.id}/checkpoint_epoch_1.pth"
    shutil.copytree(base_run.dir.parents[1] / "configs", tmp_path / "configs")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    proc = run_script("train.py", *train_args("ignored", "--resume", ref, overrides=overrides,
                                              train=base_run.dir.parents[1] / "data/train",
                                              val=base_run.dir.parents[1] / "data/val"),
                      cwd=tmp_path, env=env_for(tmp_path))
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc.stderr)
    assert expected in line and "Traceback" not in proc.stderr
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    assert registry_entries(tmp_path) == [] and [p.name for p in (tmp_path / "outputs").iterdir()] == [base_run.id]


def test_evaluate_beside_an_unwritable_checkpoint_folder_prints_results_and_writes_nothing(base_run, ws, tmp_path):
    """A model store mounted read-only must still be evaluable: results are printed, not saved beside it. (As root
    no folder is read-only; `evaluations` being a file makes writing there fail the same way.)"""
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(base_run.dir / "best_model.pth", store / "best_model.pth")
    (store / "evaluations").write_text("not a folder")
    proc = run_script("evaluate.py", *eval_args(str(store / "best_model.pth"), "data/test", "--json"), cwd=ws,
                      env=env_for(ws))
    assert proc.returncode == 0, proc.stderr
    assert "evaluation results will not be saved beside the checkpoint" in proc.stderr
    assert json.loads(proc.stdout)["metrics"]["test/mIoU"] >= 0
    assert sorted(p.name for p in store.iterdir()) == ["best_model.pth", "evaluations"]


def test_a_completed_run_that_cannot_be_registered_says_so_in_one_line(base_run, tmp_path):
    import errno

    from src.common.errors import RunFailedError
    from src.pipelines.runner import register_completed

    class FullDisk:
        def register(self, entry):
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "model_registry.json"))

    with pytest.raises(RunFailedError) as err:
        register_completed(FullDisk(), base_run.dir)
    assert str(err.value) == (f"run {base_run.dir.name} completed but could not be registered (No space left on "
                              "device); fix that, then run `street-scene registry rebuild` to add it")
    assert err.value.exit_code == 1
