"""The user guide (reproducibility_guide.md), detection part, run verbatim as a user would.

Three trainings are shared by the module, all from a tmp cwd with outputs/ and registry/ under it:
  basic      "Basic Training with Run Name"          --run-name my_vehicle_detector_v1
  high_lr    "Training with Configuration Overrides" learning_rate=0.001, batch_size=64
  reproduced "Reproducing Results with Saved Config" --config outputs/$RUN_ID/config.yaml --seed 42
Only the data paths (tiny synthetic scenes) and the 64 px / 2 epoch overrides differ from the guide's commands.
The Python snippets are the guide's code with its placeholders filled in, run in a fresh interpreter.
"""

import csv
import json
import re
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from tests.detection_e2e_support import (CONFIG, IMGSZ_64, NO_PLOTS, RUN_DIR_FILES, RUN_ID_RE, TRAIN_SECTION,
                                         VEHICLE_CLASSES, VEHICLE_YAML, assert_user_error, completion_lines,
                                         load_yaml, make_data, registry_entries, weights_sha, workspace_env)
from src.common.run_dir import read_metrics_csv
from tests.helpers import REPO_ROOT, run_script, subprocess_env

pytestmark = pytest.mark.slow  # trains models in subprocesses

TINY = [IMGSZ_64, "detection.training.epochs=2", *NO_PLOTS]
CHECKPOINT_KEYS = {"format_version", "task", "subtask", "model_state", "model_spec", "epoch", "metrics", "config",
                   "config_hash", "metadata"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("guide")
    make_data(root / "data", n_train=8, n_val=4, n_test=4, seed=0)
    return root


def _train(ws, *args, overrides=(), env=None):
    """`python scripts/train.py --config ... --task detection --detection-task vehicle_detection ...` from ws."""
    flags = [a for o in overrides for a in ("--config-override", o)]
    started = datetime.now().replace(microsecond=0)
    proc = run_script("train.py", *args, "--train-data", ws / "data" / "train", "--val-data", ws / "data" / "val",
                      "--data-yaml", VEHICLE_YAML, *flags, cwd=ws, env=workspace_env(ws, **(env or {})))
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved_to, run_id = completion_lines(proc.stdout)
    return {"proc": proc, "saved_to": saved_to, "run_id": run_id, "run_dir": ws / "outputs" / run_id,
            "started": started, "ended": datetime.now()}


def _evaluate(ws, checkpoint, *flags, config=CONFIG):
    return run_script("evaluate.py", "--config", config, *TRAIN_SECTION, "--test-data", ws / "data" / "test",
                      "--checkpoint", checkpoint, "--data-yaml", VEHICLE_YAML, *flags, cwd=ws, env=workspace_env(ws))


@pytest.fixture(scope="module")
def basic(ws):
    return _train(ws, "--config", CONFIG, *TRAIN_SECTION, "--run-name", "my_vehicle_detector_v1",
                  overrides=TINY + ["detection.training.batch_size=4"])


@pytest.fixture(scope="module")
def high_lr(ws, basic):  # after `basic`, so registry order and timestamps are fixed
    return _train(ws, "--config", CONFIG, *TRAIN_SECTION, "--run-name", "exp_high_lr",
                  overrides=TINY + ["detection.training.learning_rate=0.001", "detection.training.batch_size=64"])


@pytest.fixture(scope="module")
def reproduced(ws, basic, high_lr):
    # The guide's exact spelling: a path relative to the cwd, built from the run id the first run printed.
    return _train(ws, "--config", f"outputs/{basic['run_id']}/config.yaml", *TRAIN_SECTION, "--seed", "42")


# ---------------------------------------------------------------- Basic Training with Run Name


def test_basic_training_prints_the_guide_output(basic):
    run_id = basic["run_id"]
    match = RUN_ID_RE.fullmatch(run_id)
    assert match and match.group(2) == "my_vehicle_detector_v1"
    stamp = datetime.strptime(match.group(1), "%Y%m%d_%H%M%S")
    assert basic["started"] <= stamp <= basic["ended"]
    # outputs/ is under the cwd, so the path is printed relative, exactly as in the guide
    assert basic["saved_to"] == f"outputs/{run_id}"
    assert basic["run_dir"].is_dir()


def test_run_directory_contents(basic):
    run_dir = basic["run_dir"]
    names = {p.name for p in run_dir.iterdir()}
    assert RUN_DIR_FILES | {"checkpoint_epoch_1.pth", "checkpoint_epoch_2.pth"} <= names, names
    assert load_yaml(run_dir / "overrides.yaml") == TINY + ["detection.training.batch_size=4"]
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert (run_dir / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Starting training for 2 epochs" in (run_dir / "train.log").read_text()
    env_lines = set((run_dir / "environment.txt").read_text().splitlines())
    assert "ultralytics==8.4.190" in env_lines and any(line.startswith("torch==") for line in env_lines)


def test_config_and_metadata_describe_the_run(basic):
    import importlib.metadata

    from src.common.config_manager import ConfigManager

    run_dir = basic["run_dir"]
    config = load_yaml(run_dir / "config.yaml")
    training = config["detection"]["training"]
    assert (training["image_size"], training["epochs"], training["batch_size"], config["seed"]) == (64, 2, 4, 42)
    meta = load_yaml(run_dir / "metadata.yaml")
    assert meta["run_id"] == basic["run_id"] and meta["status"] == "completed"
    assert (meta["task"], meta["subtask"], meta["seed"], meta["seed_source"]) == (
        "detection", "vehicle_detection", 42, "config")
    assert meta["config_hash"] == ConfigManager(run_dir / "config.yaml").get_config_hash()
    assert meta["pytorch_version"] == importlib.metadata.version("torch")
    assert meta["ultralytics_version"] == importlib.metadata.version("ultralytics")
    # A commit of this checkout (HEAD may move on while the suite runs, so: an ancestor of HEAD)
    assert re.fullmatch(r"[0-9a-f]{40}", meta["git_commit"])
    ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", meta["git_commit"], "HEAD"], cwd=REPO_ROOT)
    assert ancestor.returncode == 0
    assert Path(meta["data"]["train"]) == (run_dir.parents[1] / "data" / "train" / "images").resolve()


def test_checkpoints_load_weights_only_and_embed_the_config(basic):
    import torch

    run_dir = basic["run_dir"]
    meta = load_yaml(run_dir / "metadata.yaml")
    for name, epoch in (("checkpoint_epoch_1.pth", 1), ("checkpoint_epoch_2.pth", 2), ("best_model.pth", None)):
        ckpt = torch.load(run_dir / name, map_location="cpu", weights_only=True)
        assert CHECKPOINT_KEYS <= set(ckpt), name
        assert ckpt["format_version"] == 1 and (ckpt["task"], ckpt["subtask"]) == ("detection", "vehicle_detection")
        assert ckpt["config_hash"] == meta["config_hash"] and ckpt["config"] == load_yaml(run_dir / "config.yaml")
        assert ckpt["model_spec"]["names"] == VEHICLE_CLASSES and ckpt["model_spec"]["imgsz"] == 64
        assert all(t.dtype != torch.float16 for t in ckpt["model_state"].values())
        assert epoch is None or ckpt["epoch"] == epoch
    best = torch.load(run_dir / "best_model.pth", map_location="cpu", weights_only=True)
    assert best["epoch"] == meta["result"]["metrics"]["best_epoch"]


def test_registry_entry_matches_the_guide(basic, ws):
    import importlib.metadata

    from src.common.checkpoint import file_sha256

    entry = next(e for e in registry_entries(ws) if e["run_id"] == basic["run_id"])
    run_dir = basic["run_dir"]
    assert entry["task"] == "vehicle_detection" and entry["status"] == "completed"
    assert re.fullmatch(r"[0-9a-f]{8}", entry["config_hash"])
    assert entry["config_hash"] == load_yaml(run_dir / "metadata.yaml")["config_hash"]
    assert Path(entry["checkpoint_path"]).is_absolute()
    assert Path(entry["checkpoint_path"]) == (run_dir / "best_model.pth").resolve()
    assert entry["checkpoint_sha256"] == file_sha256(run_dir / "best_model.pth")
    metrics = entry["metrics"]
    names = ("best_val_metric", "val/mAP50", "val/mAP50-95", "val/precision", "val/recall")
    assert set(names) <= set(metrics)
    assert all(isinstance(metrics[k], float) and 0 <= metrics[k] <= 1 for k in names)
    assert metrics["best_val_metric"] == metrics["val/mAP50-95"]
    best_row = [r for r in read_metrics_csv(run_dir / "metrics.csv") if r["epoch"] == metrics["best_epoch"]][0]
    assert all(metrics[k] == best_row[k] for k in names[1:])  # one name per metric: registry = metrics.csv
    stamp = datetime.fromisoformat(entry["timestamp"])
    assert basic["started"] <= stamp <= basic["ended"]
    assert entry["metadata"]["ultralytics_version"] == importlib.metadata.version("ultralytics")
    assert {"pytorch_version", "git_commit"} <= set(entry["metadata"])


# ---------------------------------------------------------------- Training with Configuration Overrides


def test_overrides_land_in_config_and_change_the_hash(basic, high_lr, ws):
    run_dir = high_lr["run_dir"]
    assert RUN_ID_RE.fullmatch(high_lr["run_id"]).group(2) == "exp_high_lr"
    training = load_yaml(run_dir / "config.yaml")["detection"]["training"]
    assert (training["learning_rate"], training["batch_size"]) == (0.001, 64)
    assert load_yaml(run_dir / "overrides.yaml") == TINY + ["detection.training.learning_rate=0.001",
                                                            "detection.training.batch_size=64"]
    hashes = {e["run_id"]: e["config_hash"] for e in registry_entries(ws)}
    assert hashes[high_lr["run_id"]] != hashes[basic["run_id"]]


# ---------------------------------------------------------------- Reproducing Results with Saved Config


def test_saved_config_reproduces_hash_and_weights(basic, reproduced):
    a, b = basic["run_dir"], reproduced["run_dir"]
    assert reproduced["run_id"] != basic["run_id"]
    assert load_yaml(a / "config.yaml") == load_yaml(b / "config.yaml")
    meta_a, meta_b = load_yaml(a / "metadata.yaml"), load_yaml(b / "metadata.yaml")
    assert meta_a["config_hash"] == meta_b["config_hash"]
    assert (meta_b["seed"], meta_b["seed_source"]) == (42, "cli")
    for name in ("best_model.pth", "checkpoint_epoch_2.pth"):
        assert weights_sha(a / name) == weights_sha(b / name), name


# ---------------------------------------------------------------- Evaluation with Config Verification


def _new_results(run_dir, before):
    folder = run_dir / "evaluations"
    return sorted(set(folder.glob("*.json")) - before) if folder.is_dir() else []


def test_verify_config_prints_the_guide_warning_and_the_changed_keys(ws, high_lr):
    from src.common.config_manager import ConfigManager

    ckpt_hash = load_yaml(high_lr["run_dir"] / "metadata.yaml")["config_hash"]
    current = ConfigManager(CONFIG).get_config_hash()
    proc = _evaluate(ws, f"outputs/{high_lr['run_id']}/best_model.pth", "--verify-config")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    warning = (f"Config hash mismatch! Checkpoint config hash: {ckpt_hash}, Current config hash: {current}. "
               "This may affect reproducibility.")
    start = lines.index(warning)
    # key: checkpoint value -> current config value, in key order
    assert lines[start + 1:start + 7] == [
        "  detection.evaluation.plots: false -> true",
        "  detection.training.batch_size: 64 -> 16",
        "  detection.training.epochs: 2 -> 20",
        "  detection.training.image_size: 64 -> 320",
        "  detection.training.learning_rate: 0.001 -> 0.01",
        "  detection.training.plots: false -> true",
    ]
    assert not lines[start + 7].startswith("  ")
    assert any(line.startswith("Evaluation results (vehicle_detection, test split") for line in lines)
    assert any(re.fullmatch(r"  test/mAP50: \d\.\d{4}", line) for line in lines)


def test_strict_mismatch_exits_before_evaluating(ws, high_lr):
    before = set((high_lr["run_dir"] / "evaluations").glob("*.json"))
    proc = _evaluate(ws, f"outputs/{high_lr['run_id']}/best_model.pth", "--verify-config", "--strict")
    assert_user_error(proc, r"config hash mismatch .*--strict")
    assert proc.stdout.splitlines()[0].startswith("Config hash mismatch! Checkpoint config hash: ")
    assert "Evaluation results" not in proc.stdout and "Results saved to" not in proc.stdout
    assert _new_results(high_lr["run_dir"], before) == []


def test_saved_config_verifies_and_json_output_is_saved_beside_the_checkpoint(ws, basic):
    # The guide's "Step 3: Reproduce from Config + Weights", with --verify-config and --json added.
    run_dir = basic["run_dir"]
    folder = run_dir / "evaluations"
    before = set(folder.glob("*.json")) if folder.is_dir() else set()
    proc = _evaluate(ws, f"outputs/{basic['run_id']}/best_model.pth", "--verify-config", "--json",
                     config=f"outputs/{basic['run_id']}/config.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # stdout is nothing but the JSON document
    assert set(result["metrics"]) == {"test/mAP50", "test/mAP50-95", "test/precision", "test/recall"}
    assert sorted(result["per_class"]) == sorted(VEHICLE_CLASSES)
    assert (result["run_id"], result["subtask"], result["split"]) == (basic["run_id"], "vehicle_detection", "test")
    assert f"Config hash verified: {load_yaml(run_dir / 'metadata.yaml')['config_hash']}" in proc.stderr
    assert "Config hash mismatch" not in proc.stdout + proc.stderr
    [saved] = _new_results(run_dir, before)
    record = json.loads(saved.read_text())
    assert record["metrics"] == result["metrics"] and record["per_class"] == result["per_class"]
    assert Path(record["checkpoint"]) == (run_dir / "best_model.pth").resolve()
    assert record["run_id"] == basic["run_id"]


# ---------------------------------------------------------------- Python API snippets


def _python(ws, code, **env):
    """Run a guide snippet in a fresh interpreter from ws (the repo is importable, as from a checkout)."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ws, capture_output=True, text=True,
                          env=subprocess_env(workspace_env(ws, **env)), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()


def test_model_registry_snippet(ws, basic, high_lr, reproduced):
    # The registry path is the guide's relative default: STREET_SCENE_REGISTRY is emptied for this run.
    out = _python(ws, """
        from src.common.model_registry import ModelRegistry

        registry = ModelRegistry("registry/model_registry.json")

        # Find best model for a task
        best_entry = registry.find_best_entry_by_metric(
            task='vehicle_detection',
            metric_name='best_val_metric',
            mode='max'
        )
        print(f"Best model: {best_entry['run_id']}")
        print(f"Metrics: {best_entry['metrics']}")
        print(f"Checkpoint: {best_entry['checkpoint_path']}")

        # List all vehicle detection runs
        vehicle_entries = registry.find_entries_by_task('vehicle_detection')
        for entry in vehicle_entries:
            print(f"{entry['run_id']}: {entry['metrics']}")

        # Export registry to CSV
        registry.export_to_csv('model_registry.csv')
        """, STREET_SCENE_REGISTRY="")
    entries = registry_entries(ws)
    ids = [basic["run_id"], high_lr["run_id"], reproduced["run_id"]]
    assert [e["run_id"] for e in entries] == ids
    top = max(e["metrics"]["best_val_metric"] for e in entries)
    expected = min((e for e in entries if e["metrics"]["best_val_metric"] == top),
                   key=lambda e: (e["timestamp"], e["run_id"]))
    assert out[0] == f"Best model: {expected['run_id']}"
    assert out[2] == f"Checkpoint: {expected['checkpoint_path']}"
    assert [line.split(":", 1)[0] for line in out[3:]] == ids
    with open(ws / "model_registry.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run_id"] for r in rows] == ids
    assert all(float(r["metrics.best_val_metric"]) == e["metrics"]["best_val_metric"] for r, e in zip(rows, entries))


def test_compare_configurations_snippet(ws, basic, high_lr, reproduced):
    code = """
        from src.common.config_manager import ConfigManager

        cm1 = ConfigManager("outputs/RUN1/config.yaml")
        cm2 = ConfigManager("outputs/RUN2/config.yaml")

        # Compare config hashes
        if cm1.get_config_hash() == cm2.get_config_hash():
            print("Same configuration")
        else:
            print("Different configurations")

        # View specific configs
        print("Run 1 learning rate:", cm1.get_config()['detection']['training']['learning_rate'])
        print("Run 2 learning rate:", cm2.get_config()['detection']['training']['learning_rate'])
        """
    out = _python(ws, code.replace("RUN1", basic["run_id"]).replace("RUN2", high_lr["run_id"]))
    assert out == ["Different configurations", "Run 1 learning rate: 0.01", "Run 2 learning rate: 0.001"]
    out = _python(ws, code.replace("RUN1", basic["run_id"]).replace("RUN2", reproduced["run_id"]))
    assert out == ["Same configuration", "Run 1 learning rate: 0.01", "Run 2 learning rate: 0.01"]


def test_find_models_by_configuration_snippet(ws, basic, high_lr, reproduced):
    config_hash = load_yaml(basic["run_dir"] / "metadata.yaml")["config_hash"]
    out = _python(ws, f"""
        from src.common.model_registry import ModelRegistry

        registry = ModelRegistry()

        # Find all models trained with a specific config
        config_hash = "{config_hash}"
        entries = registry.find_entries_by_config_hash(config_hash)
        for entry in entries:
            print(f"Run {{entry['run_id']}}: {{entry['metrics']}}")
        """)
    assert [line.split(":", 1)[0] for line in out] == [f"Run {basic['run_id']}", f"Run {reproduced['run_id']}"]


def test_batch_evaluation_snippet(ws, basic, high_lr, reproduced):
    out = _python(ws, f"""
        from src.common.model_registry import ModelRegistry
        from pipelines.pipeline import StreetScenePipeline

        registry = ModelRegistry()

        # Evaluate all vehicle detection models
        for entry in registry.find_entries_by_task('vehicle_detection'):
            checkpoint = entry['checkpoint_path']
            config_path = f"{{checkpoint.rsplit('/', 1)[0]}}/config.yaml"

            pipeline = StreetScenePipeline(
                config_path,
                'detection',
                detection_task='vehicle_detection'
            )

            metrics = pipeline.evaluate(
                test_data_path='{ws / "data" / "test"}',
                checkpoint_path=checkpoint
            )
            print(f"{{entry['run_id']}}: {{metrics}}")
        """)
    results = [line for line in out if re.match(r"\d{8}_\d{6}_\S+: \{", line)]
    assert [line.split(":", 1)[0] for line in results] == [basic["run_id"], high_lr["run_id"], reproduced["run_id"]]
    for line in results:
        for key in ("'test/mAP50'", "'test/mAP50-95'", "'test/precision'", "'test/recall'", "'per_class'"):
            assert key in line
