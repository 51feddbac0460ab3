"""W&B sync in offline mode, read back from the offline run's transaction log (config, history, summary,
artifacts, exit code). No network: sockets are blocked except loopback, and online mode without credentials
must fail before any connection is tried.
"""

import argparse
import hashlib
import json
import struct
import time
from pathlib import Path

import pytest

from src.common.atomic import atomic_write_bytes, atomic_write_text
from src.common.errors import UserError
from src.common.yaml_io import dump_yaml, load_yaml

RUN_ID = "20240115_143022_vehicle_detection"
CONFIG = {"seed": 42, "device": "cpu",
          "detection": {"training": {"epochs": 3, "learning_rate": 1e-4, "optimizer": "SGD", "amp": False,
                                     "weights": None, "image_size": [64, 64]}}}
ROWS = [(1, 1.5, 0.1), (2, 1.2, 0.2), (3, 1.0, 0.25)]
CKPT = b"street-scene checkpoint bytes " * 8


def make_run(root: Path, run_id: str = RUN_ID, *, status: str = "completed", epochs: int = 3) -> Path:
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    atomic_write_text(run_dir / "config.yaml", dump_yaml(CONFIG))
    atomic_write_text(run_dir / "overrides.yaml", dump_yaml([]))
    atomic_write_text(run_dir / "environment.txt", "torch==2.14.1\n")
    lines = ["epoch,train/box_loss,val/mAP50-95"] + [f"{e},{loss},{m}" for e, loss, m in ROWS[:epochs]]
    atomic_write_text(run_dir / "metrics.csv", "\n".join(lines) + "\n")
    atomic_write_bytes(run_dir / "best_model.pth", CKPT)
    meta = {"run_id": run_id, "status": status, "task": "detection", "subtask": "vehicle_detection",
            "config_hash": "abcd1234", "started_at": "2024-01-15T14:30:22.000000", "git_commit": "0" * 40,
            "git_dirty": False, "dataset_fingerprints": {"train": {"files": 10, "bytes": 99, "sha256": "f" * 64}}}
    if status == "completed":
        meta["result"] = {"checkpoint": "best_model.pth", "checkpoint_sha256": hashlib.sha256(CKPT).hexdigest(),
                          "metrics": {"best_val_metric": 0.25, "best_epoch": 3, "val/mAP50-95": 0.25}}
    atomic_write_text(run_dir / "metadata.yaml", dump_yaml(meta))
    return run_dir


@pytest.fixture
def env(tmp_path, monkeypatch):
    """W&B fully local: offline, every W&B folder under tmp, no credentials anywhere.

    wandb reads its environment once per process (a settings singleton): teardown before and after makes each
    test see its own folders.
    """
    import wandb

    wandb.teardown()
    for var in ("WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE",
                "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    wandb_vars = {"WANDB_MODE": "offline", "WANDB_DIR": tmp_path, "WANDB_CONFIG_DIR": tmp_path / "wb-config",
                  "WANDB_CACHE_DIR": tmp_path / "wb-cache", "WANDB_DATA_DIR": tmp_path / "wb-data",
                  "WANDB_SILENT": "true", "WANDB_ERROR_REPORTING": "false", "NETRC": tmp_path / "no-netrc",
                  "STREET_SCENE_OUTPUT_DIR": tmp_path / "outputs",
                  "STREET_SCENE_REGISTRY": tmp_path / "registry.json"}
    for key, value in wandb_vars.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.chdir(tmp_path)
    yield argparse.Namespace(outputs=tmp_path / "outputs", wandb_dir=tmp_path / "wandb")
    wandb.teardown()


def sync_cli(*argv) -> int:
    from src.cli import sync_cmd

    parser = argparse.ArgumentParser()
    sync_cmd.add_arguments(parser)
    return sync_cmd.run(parser.parse_args([str(a) for a in argv]))


# ---- reading an offline run back: W&B's transaction log (leveldb-log framing of protobuf records) ----------
_BLOCK, _HEADER = 32768, 7


def read_offline_run(folder: Path) -> dict:
    """{run, config, history, summary, artifacts, exit_code} from `folder/run-<id>.wandb`."""
    import wandb
    from wandb.proto import wandb_internal_pb2 as pb

    # wandb-core may still be writing the log after run.finish() returns; shutting its service down flushes it
    # (what happens anyway when a sync command exits)
    wandb.teardown()
    (log,) = Path(folder).glob("run-*.wandb")
    out = {"config": {}, "history": [], "summary": {}, "artifacts": [], "exit_code": None}
    for data in _records(log.read_bytes()):
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
            out["config"].update(_items(record.run.config.update))
        elif kind == "config":
            out["config"].update(_items(record.config.update))
        elif kind == "history":
            out["history"].append(_items(record.history.item))
        elif kind == "summary":
            out["summary"].update(_items(record.summary.update))
        elif kind == "artifact":
            out["artifacts"].append(record.artifact)
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


def _records(blob: bytes):
    ident, magic, version = struct.unpack("<4sHB", blob[:_HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0)
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(blob):
        if _BLOCK - pos % _BLOCK < _HEADER:  # a block's tail too short for a header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", blob[pos:pos + _HEADER])
        chunk, pos = blob[pos + _HEADER:pos + _HEADER + length], pos + _HEADER + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk  # full / first, middle / last
        if kind in (1, 4):
            yield pending


def _items(items) -> dict:
    return {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in items}


def history_of(run: dict, key: str):
    return [(row["_step"], row[key]) for row in run["history"] if key in row]


def offline_dirs(env):
    return sorted(env.wandb_dir.glob("offline-run-*"))


# ---- tests ---------------------------------------------------------------------------------------------------
def test_offline_sync_writes_config_history_summary_and_files(env):
    from src.tracking import log_to_wandb

    run_dir = make_run(env.outputs)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    result = log_to_wandb(run_dir)
    assert (result.mode, result.project, result.wandb_run_id) == ("offline", "street-scene", RUN_ID)
    assert [Path(result.location)] == offline_dirs(env)
    run = read_offline_run(Path(result.location))
    assert (run["run"].run_id, run["run"].display_name, run["run"].project) == (RUN_ID, RUN_ID, "street-scene")
    assert list(run["run"].tags) == ["detection", "vehicle_detection"]
    config = run["config"]
    assert config["detection.training.learning_rate"] == 1e-4 and config["detection.training.optimizer"] == "SGD"
    assert config["detection.training.amp"] is False and config["detection.training.weights"] is None
    assert config["detection.training.image_size"] == [64, 64] and config["seed"] == 42
    assert config["street_scene.config_hash"] == "abcd1234" and config["street_scene.git_commit"] == "0" * 40
    assert config["street_scene.dataset.train.sha256"] == "f" * 64
    assert history_of(run, "val/mAP50-95") == [(1, 0.1), (2, 0.2), (3, 0.25)]  # step = epoch
    assert history_of(run, "train/box_loss") == [(1, 1.5), (2, 1.2), (3, 1.0)]
    summary = run["summary"]
    assert summary["best_val_metric"] == 0.25 and summary["val/mAP50-95"] == 0.25  # the result's (best) value
    assert not any(k.startswith("final/") for k in summary)
    assert summary["street_scene.status"] == "completed"
    (files,) = run["artifacts"]
    assert (files.type, files.name) == ("run-files", f"run-files-{RUN_ID}")
    assert {e.path for e in files.manifest.contents} == {"config.yaml", "metadata.yaml", "overrides.yaml",
                                                         "environment.txt", "metrics.csv"}
    assert run["exit_code"] == 0
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_resync_uses_the_same_run_id(env):
    run_dir = make_run(env.outputs)
    assert sync_cli("wandb", RUN_ID) == 0
    time.sleep(0.01)
    assert sync_cli("wandb", run_dir, "--project", "other") == 0
    first, second = (read_offline_run(d) for d in offline_dirs(env))
    # W&B keys runs by id: `wandb sync` of both folders updates one run, never creates a second
    assert first["run"].run_id == second["run"].run_id == RUN_ID
    assert second["run"].project == "other"
    assert history_of(second, "val/mAP50-95") == history_of(first, "val/mAP50-95")


def test_running_run_is_synced_with_its_status(env):
    make_run(env.outputs, status="running", epochs=2)
    from src.tracking.wandb_sync import sync_wandb

    run = read_offline_run(Path(sync_wandb(RUN_ID).location))
    assert history_of(run, "val/mAP50-95") == [(1, 0.1), (2, 0.2)]
    assert run["summary"]["street_scene.status"] == "running" and "best_val_metric" not in run["summary"]


def test_log_checkpoint_adds_a_model_artifact(env):
    make_run(env.outputs)
    assert sync_cli("wandb", RUN_ID, "--log-checkpoint") == 0
    (folder,) = offline_dirs(env)
    models = [a for a in read_offline_run(folder)["artifacts"] if a.type == "model"]
    assert len(models) == 1 and [e.path for e in models[0].manifest.contents] == ["best_model.pth"]
    assert json.loads(models[0].metadata)["checkpoint_sha256"] == hashlib.sha256(CKPT).hexdigest()
    assert "best" in models[0].aliases


def test_online_without_credentials_fails_at_once(env, capsys):
    from src.tracking.common import TrackerUnavailable

    run_dir = make_run(env.outputs)
    start = time.monotonic()
    with pytest.raises(TrackerUnavailable, match="W&B online mode needs credentials") as info:
        sync_cli("wandb", RUN_ID, "--mode", "online")
    assert time.monotonic() - start < 10 and "\n" not in str(info.value)
    assert offline_dirs(env) == [] and not (env.wandb_dir / "latest-run").exists()
    with pytest.raises(UserError, match="needs credentials"):  # the same via the config
        from src.tracking.wandb_sync import sync_wandb

        config = load_yaml(run_dir / "config.yaml")
        atomic_write_text(run_dir / "config.yaml", dump_yaml({**config, "tracking": {"wandb": {"mode": "online"}}}))
        sync_wandb(RUN_ID)


def test_bad_input_is_a_one_line_error(env):
    with pytest.raises(UserError, match="unknown run 'nope'"):
        sync_cli("wandb", "nope")
    with pytest.raises(UserError, match="nothing to sync"):
        sync_cli("wandb")
    run_dir = make_run(env.outputs)
    (run_dir / "best_model.pth").unlink()
    with pytest.raises(UserError, match="has no checkpoint yet"):
        sync_cli("wandb", run_dir, "--log-checkpoint")
    assert offline_dirs(env) == []  # refused before a W&B run was opened
    (run_dir / "metadata.yaml").unlink()
    with pytest.raises(UserError, match="missing metadata.yaml") as info:
        sync_cli("wandb", run_dir)
    assert "\n" not in str(info.value)


def test_all_reports_a_bad_run_and_syncs_the_rest(env, capsys):
    from src.common.model_registry import ModelRegistry, build_entry

    good, gone = (make_run(env.outputs, f"2024011{i}_000000_vehicle_detection") for i in (1, 2))
    ModelRegistry().register_many([build_entry(good), build_entry(gone)])
    (gone / "config.yaml").unlink()
    with pytest.raises(UserError, match="1 of 2 runs were not synced"):
        sync_cli("wandb", "--all")
    assert "missing config.yaml" in capsys.readouterr().err
    assert [read_offline_run(d)["run"].run_id for d in offline_dirs(env)] == [good.name]


def test_live_hooks_log_each_epoch_then_finish(env):
    from src.pipelines.context import TrainContext
    from src.tasks.contract import PreparedData
    from src.tracking.live import start_live_tracking

    run_dir = make_run(env.outputs, status="running", epochs=0)
    config = {**CONFIG, "tracking": {"wandb": {"enabled": True, "project": "live"}}}
    live = start_live_tracking(config, run_dir, RUN_ID)
    assert len(live.hooks) == 1
    ctx = TrainContext(config=config, config_hash="abcd1234", task="detection", subtask="vehicle_detection", seed=42,
                       device="cpu", run_id=RUN_ID, run_dir=run_dir, metadata={},
                       data=PreparedData(names=[], record={}),
                       epoch_hooks=live.hooks)
    for epoch, loss, value in ROWS:
        ctx.log_epoch(epoch, {"train/box_loss": loss, "val/mAP50-95": value})
    meta = load_yaml(run_dir / "metadata.yaml")
    meta.update(status="completed", result={"metrics": {"best_val_metric": 0.25}})
    atomic_write_text(run_dir / "metadata.yaml", dump_yaml(meta))
    live.finish()
    (folder,) = offline_dirs(env)
    run = read_offline_run(folder)
    assert run["run"].project == "live"
    assert history_of(run, "val/mAP50-95") == [(1, 0.1), (2, 0.2), (3, 0.25)]  # live points, none repeated
    assert run["summary"]["best_val_metric"] == 0.25 and run["summary"]["street_scene.status"] == "completed"
    assert run["exit_code"] == 0


def test_live_settings_reject_bad_tracking_config():
    from src.tracking.live import live_settings

    with pytest.raises(UserError, match="unknown config key tracking.wandb.projet"):
        live_settings({"tracking": {"wandb": {"projet": "x"}}})
    with pytest.raises(UserError, match="tracking.wandb.mode"):
        live_settings({"tracking": {"wandb": {"mode": "sometimes"}}})
    with pytest.raises(UserError, match="tracking.mlflow.enabled must be a bool"):
        live_settings({"tracking": {"mlflow": {"enabled": "yes"}}})
    ml, wb = live_settings({"tracking": {"mlflow": {"enabled": False}}}, mlflow=True)
    assert ml.enabled and not wb.enabled  # the --mlflow flag beats the config


def test_wandb_run_id_is_deterministic_and_valid():
    from src.tracking.wandb_sync import wandb_run_id

    assert wandb_run_id(RUN_ID) == RUN_ID
    long_id = "20240115_143022_" + "x" * 100
    assert wandb_run_id(long_id) == wandb_run_id(long_id) != wandb_run_id(long_id + "y")
    assert len(wandb_run_id(long_id)) <= 64


@pytest.mark.slow
def test_sync_in_a_subprocess_leaves_a_complete_offline_run(env):
    """As a user runs it: its own process (network blocked, wandb-core service included), files complete at exit."""
    import subprocess
    import sys

    from helpers import subprocess_env

    make_run(env.outputs)
    code = "import sys; from src.tracking import log_to_wandb; print(log_to_wandb(sys.argv[1]).location)"
    done = subprocess.run([sys.executable, "-c", code, RUN_ID], cwd=env.outputs.parent, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert folder.parent == env.wandb_dir
    run = read_offline_run(folder)
    assert history_of(run, "val/mAP50-95") == [(1, 0.1), (2, 0.2), (3, 0.25)] and run["exit_code"] == 0


def test_ultralytics_plots_and_prediction_images_reach_wandb(env):
    """As images (media files at the last epoch's step) and inside the run-files artifact, with args.yaml."""
    from PIL import Image

    run_dir = make_run(env.outputs)
    ultra = run_dir / "ultralytics"
    ultra.mkdir()
    atomic_write_text(ultra / "args.yaml", "epochs: 3\n")
    Image.new("RGB", (16, 8), (255, 0, 0)).save(ultra / "confusion_matrix.png")
    Image.new("RGB", (8, 8), (0, 0, 255)).save(ultra / "val_batch0_pred.jpg")
    evaluation = run_dir / "evaluations" / "20240115_150000_best_model"
    evaluation.mkdir(parents=True)
    Image.new("RGB", (8, 8), (0, 255, 0)).save(evaluation / "BoxPR_curve.png")
    assert sync_cli("wandb", RUN_ID) == 0
    (folder,) = offline_dirs(env)
    run = read_offline_run(folder)
    rows = [row for row in run["history"] if row["_step"] == 3]  # merged into the last epoch's row
    images = {key.rsplit("/", 1)[0]: row for row in rows for key in row if key.endswith("/_type")}
    assert set(images) == {"ultralytics/confusion_matrix", "ultralytics/val_batch0_pred",
                           "evaluations/20240115_150000_best_model/BoxPR_curve"}
    row = images["ultralytics/confusion_matrix"]
    assert row["ultralytics/confusion_matrix/_type"] == "image-file"
    assert (row["ultralytics/confusion_matrix/width"], row["ultralytics/confusion_matrix/height"]) == (16, 8)
    media = folder / "files" / row["ultralytics/confusion_matrix/path"]
    assert media.read_bytes() == (ultra / "confusion_matrix.png").read_bytes()
    assert history_of(run, "val/mAP50-95") == [(1, 0.1), (2, 0.2), (3, 0.25)]  # the epochs are untouched
    (files,) = run["artifacts"]
    assert {"ultralytics/args.yaml", "ultralytics/confusion_matrix.png", "ultralytics/val_batch0_pred.jpg",
            "evaluations/20240115_150000_best_model/BoxPR_curve.png"} <= {e.path for e in files.manifest.contents}
