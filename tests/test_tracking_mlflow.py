"""MLflow sync against real stores: a sqlite tracking/registry store under tmp, and a real `mlflow server`.

Everything is read back through MlflowClient. Run directories are built by hand as docs/ARCHITECTURE.md
describes them (config.yaml, overrides.yaml, metadata.yaml, environment.txt, git.diff, metrics.csv, checkpoint).
"""

import argparse
import hashlib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import subprocess_env
from src.common.atomic import atomic_write_bytes, atomic_write_text
from src.common.errors import UserError
from src.common.yaml_io import dump_yaml, load_yaml

RUN_ID = "20240115_143022_vehicle_detection"
CONFIG = {"seed": 42, "device": "cpu", "tracking": {"mlflow": {"enabled": False}},
          "detection": {"training": {"epochs": 3, "learning_rate": 1e-4, "optimizer": "SGD", "amp": False,
                                     "weights": None, "image_size": [64, 64], "name": "1"}}}
ROWS = [(1, 1.5, 0.1), (2, 1.2, 0.2), (3, 1.0, 0.25)]
CKPT = b"street-scene checkpoint bytes " * 8


def make_run(root: Path, run_id: str = RUN_ID, *, status: str = "completed", epochs: int = 3) -> Path:
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    atomic_write_text(run_dir / "config.yaml", dump_yaml(CONFIG))
    atomic_write_text(run_dir / "overrides.yaml", dump_yaml(["detection.training.epochs=3"]))
    atomic_write_text(run_dir / "environment.txt", "torch==2.14.1\n")
    atomic_write_text(run_dir / "git.diff", "diff --git a/x b/x\n")
    write_rows(run_dir, ROWS[:epochs])
    atomic_write_bytes(run_dir / "best_model.pth", CKPT)
    meta = {"run_id": run_id, "run_name": "vehicle_detection", "status": "running", "task": "detection",
            "subtask": "vehicle_detection", "config_hash": "abcd1234", "seed": 42,
            "started_at": "2024-01-15T14:30:22.000000", "finished_at": None,
            "git_commit": "0123456789abcdef0123456789abcdef01234567", "git_branch": "main", "git_dirty": True,
            "dataset_fingerprints": {"train": {"version": 1, "files": 10, "bytes": 12345, "sha256": "f" * 64},
                                     "val": {"version": 1, "files": 4, "bytes": 2345, "sha256": "e" * 64}}}
    atomic_write_text(run_dir / "metadata.yaml", dump_yaml(meta))
    if status != "running":
        finish_run(run_dir, status)
    return run_dir


def write_rows(run_dir: Path, rows) -> None:
    lines = ["epoch,train/box_loss,val/mAP50-95"] + [f"{e},{loss},{m}" for e, loss, m in rows]
    atomic_write_text(run_dir / "metrics.csv", "\n".join(lines) + "\n")


def finish_run(run_dir: Path, status: str = "completed") -> None:
    meta = load_yaml(run_dir / "metadata.yaml")
    meta.update(status=status, finished_at="2024-01-15T14:35:00.000000")
    if status == "completed":
        meta["result"] = {"checkpoint": "best_model.pth", "checkpoint_sha256": hashlib.sha256(CKPT).hexdigest(),
                          "metrics": {"best_val_metric": 0.25, "best_epoch": 3, "val/mAP50-95": 0.25}}
    atomic_write_text(run_dir / "metadata.yaml", dump_yaml(meta))


def snapshot(run_dir: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run_dir.iterdir())}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module: creating MLflow's tables takes seconds, so it is done once.

    MLflow fixes a sqlite store's default artifact root (./mlruns) when it first opens the store in a process and
    reuses that store afterwards, so the cwd must be the tmp folder at that moment.
    """
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        MlflowClient(uri).search_experiments()
    return root, uri


@pytest.fixture
def env(store, tmp_path, monkeypatch):
    """Run dirs and registry under tmp, cwd too, and a fresh experiment per test."""
    root, uri = store
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STREET_SCENE_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("STREET_SCENE_REGISTRY", str(tmp_path / "registry.json"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    from mlflow.tracking import MlflowClient

    return argparse.Namespace(uri=uri, root=root, client=MlflowClient(uri), outputs=tmp_path / "outputs",
                              experiment=f"exp-{tmp_path.name}")


def sync_cli(*argv) -> int:
    from src.cli import sync_cmd

    parser = argparse.ArgumentParser()
    sync_cmd.add_arguments(parser)
    return sync_cmd.run(parser.parse_args([str(a) for a in argv]))


def runs_of(env):
    exp = env.client.get_experiment_by_name(env.experiment)
    return env.client.search_runs([exp.experiment_id])


def history(env, mlflow_run_id, key):
    return [(m.step, m.value) for m in env.client.get_metric_history(mlflow_run_id, key)]


def test_sync_logs_params_history_final_metrics_tags_and_files(env):
    from src.tracking import log_to_mlflow

    run_dir = make_run(env.outputs)
    before = snapshot(run_dir)
    result = log_to_mlflow(run_dir, RUN_ID, tracking_uri=env.uri, experiment=env.experiment)
    assert result.created and result.run_id == RUN_ID
    run = env.client.get_run(result.mlflow_run_id)
    params = run.data.params
    # JSON form keeps the type: a float, a string, a bool, null, a list, and the string "1" (not the number 1)
    assert params["detection.training.learning_rate"] == "0.0001"
    assert params["detection.training.optimizer"] == '"SGD"'
    assert params["detection.training.amp"] == "false"
    assert params["detection.training.weights"] == "null"
    assert params["detection.training.image_size"] == "[64, 64]"
    assert params["detection.training.name"] == '"1"'
    assert params["seed"] == "42" and params["tracking.mlflow.enabled"] == "false"
    assert history(env, result.mlflow_run_id, "val/mAP50-95") == [(1, 0.1), (2, 0.2), (3, 0.25)]
    assert history(env, result.mlflow_run_id, "train/box_loss") == [(1, 1.5), (2, 1.2), (3, 1.0)]
    assert run.data.metrics["best_val_metric"] == 0.25 and run.data.metrics["best_epoch"] == 3
    # one name per metric: the result's val/mAP50-95 is the best epoch's point of that series, not a new metric
    assert not any(k.startswith("final/") for k in run.data.metrics)
    tags = run.data.tags
    assert tags["street_scene.run_id"] == RUN_ID and tags["mlflow.runName"] == RUN_ID
    assert tags["street_scene.config_hash"] == "abcd1234"
    assert (tags["street_scene.task"], tags["street_scene.subtask"]) == ("detection", "vehicle_detection")
    assert tags["street_scene.git_commit"] == tags["mlflow.source.git.commit"] == "0123456789abcdef" * 2 + "01234567"
    assert tags["street_scene.git_dirty"] == "true"
    assert tags["street_scene.dataset.train.sha256"] == "f" * 64 and tags["street_scene.dataset.val.files"] == "4"
    assert run.info.status == "FINISHED"
    assert run.info.start_time == int(time.mktime((2024, 1, 15, 14, 30, 22, 0, 0, -1)) * 1000)
    files = {a.path for a in env.client.list_artifacts(result.mlflow_run_id)}
    assert files == {"config.yaml", "metadata.yaml", "overrides.yaml", "git.diff", "environment.txt", "metrics.csv"}
    local = Path(env.client.download_artifacts(result.mlflow_run_id, "config.yaml", str(env.outputs.parent)))
    assert local.read_bytes() == (run_dir / "config.yaml").read_bytes()
    assert snapshot(run_dir) == before  # nothing in the run dir was touched
    assert Path(env.client.get_experiment(result.experiment_id).artifact_location).is_relative_to(env.root)
    with pytest.raises(UserError, match=f"holds run '{RUN_ID}', not 'other_run'"):  # the documented run_id is checked
        log_to_mlflow(run_dir, "other_run", tracking_uri=env.uri, experiment=env.experiment)


def test_second_sync_updates_the_same_run_without_duplicate_points(env):
    run_dir = make_run(env.outputs)
    argv = ["mlflow", run_dir, "--tracking-uri", env.uri, "--experiment", env.experiment]
    assert sync_cli(*argv) == 0
    assert sync_cli(*argv) == 0
    runs = runs_of(env)
    assert len(runs) == 1
    assert history(env, runs[0].info.run_id, "val/mAP50-95") == [(1, 0.1), (2, 0.2), (3, 0.25)]
    assert len(env.client.get_metric_history(runs[0].info.run_id, "best_val_metric")) == 1


def test_running_run_can_be_synced_and_synced_again_when_done(env):
    from src.tracking.mlflow_sync import sync_mlflow

    run_dir = make_run(env.outputs, status="running", epochs=2)
    first = sync_mlflow(RUN_ID, tracking_uri=env.uri, experiment=env.experiment)
    run = env.client.get_run(first.mlflow_run_id)
    assert run.info.status == "RUNNING" and run.data.tags["street_scene.status"] == "running"
    assert history(env, first.mlflow_run_id, "val/mAP50-95") == [(1, 0.1), (2, 0.2)]
    assert "best_val_metric" not in run.data.metrics

    write_rows(run_dir, ROWS)  # training went on, then finished
    finish_run(run_dir)
    second = sync_mlflow(RUN_ID, tracking_uri=env.uri, experiment=env.experiment)
    assert (second.mlflow_run_id, second.created) == (first.mlflow_run_id, False)
    run = env.client.get_run(first.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["street_scene.status"] == "completed"
    assert history(env, first.mlflow_run_id, "val/mAP50-95") == [(1, 0.1), (2, 0.2), (3, 0.25)]
    assert run.data.metrics["best_val_metric"] == 0.25
    assert len(runs_of(env)) == 1


def test_register_model_adds_one_version_tagged_with_the_config_hash(env, capsys):
    run_dir = make_run(env.outputs)
    before = snapshot(run_dir)
    name = f"vehicles-{env.experiment}"
    argv = ["mlflow", RUN_ID, "--tracking-uri", env.uri, "--experiment", env.experiment, "--register-model", name]
    assert sync_cli(*argv) == 0
    assert f"model {name} version 1" in capsys.readouterr().out
    assert sync_cli(*argv) == 0  # idempotent: the same checkpoint is not registered twice
    versions = env.client.search_model_versions(f"name='{name}'")
    assert len(versions) == 1
    version = versions[0]
    mlflow_run_id = runs_of(env)[0].info.run_id
    # an mlflow.pyfunc model folder, one per distinct set of weights (tests/test_tracking_model.py loads one)
    assert version.run_id == mlflow_run_id and version.source.startswith(f"runs:/{mlflow_run_id}/model/")
    assert version.tags["street_scene.config_hash"] == "abcd1234"
    assert version.tags["street_scene.checkpoint_sha256"] == hashlib.sha256(CKPT).hexdigest()
    assert (version.tags["street_scene.task"], version.tags["street_scene.subtask"]) == ("detection",
                                                                                         "vehicle_detection")
    assert version.tags["street_scene.run_id"] == RUN_ID and "street_scene.onnx_sha256" not in version.tags
    model_dir = version.source.split(f"runs:/{mlflow_run_id}/", 1)[1]
    local = env.client.download_artifacts(mlflow_run_id, f"{model_dir}/artifacts/best_model.pth",
                                          str(env.outputs.parent))
    assert Path(local).read_bytes() == CKPT
    assert {a.path for a in env.client.list_artifacts(mlflow_run_id)} >= {"config.yaml", "model"}
    assert "checkpoint" not in {a.path for a in env.client.list_artifacts(mlflow_run_id)}  # no second copy
    assert snapshot(run_dir) == before


def test_register_model_refuses_a_running_run(env):
    from src.tracking.mlflow_sync import sync_mlflow

    make_run(env.outputs, status="running")
    with pytest.raises(UserError, match="only a completed run"):
        sync_mlflow(RUN_ID, tracking_uri=env.uri, experiment=env.experiment, register_model="m")


def test_changed_checkpoint_is_refused_for_registration(env):
    from src.tracking.mlflow_sync import sync_mlflow

    run_dir = make_run(env.outputs)
    atomic_write_bytes(run_dir / "best_model.pth", b"other weights")
    with pytest.raises(UserError, match="does not match the sha256 recorded"):
        sync_mlflow(RUN_ID, tracking_uri=env.uri, experiment=env.experiment, register_model="m2")


def test_all_syncs_every_registry_entry(env, capsys):
    from src.common.model_registry import ModelRegistry, build_entry

    dirs = [make_run(env.outputs, f"2024011{i}_000000_vehicle_detection") for i in (1, 2)]
    ModelRegistry().register_many(build_entry(d) for d in dirs)
    assert sync_cli("mlflow", "--all", "--tracking-uri", env.uri, "--experiment", env.experiment) == 0
    tagged = sorted(r.data.tags["street_scene.run_id"] for r in runs_of(env))
    assert tagged == [d.name for d in dirs]
    assert capsys.readouterr().out.count("(created)") == 2


@pytest.mark.parametrize("make, message", [
    (lambda out: "no_such_run", "unknown run 'no_such_run'"),
    (lambda out: (out / "x").mkdir(parents=True) or out / "x", "missing config.yaml, metadata.yaml"),
])
def test_bad_run_is_a_one_line_error(env, make, message):
    with pytest.raises(UserError, match=message) as info:
        sync_cli("mlflow", make(env.outputs), "--tracking-uri", env.uri)
    assert "\n" not in str(info.value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracking_uri_fails_fast(env):
    from src.tracking.common import TrackerUnavailable

    run_dir = make_run(env.outputs)
    before = snapshot(run_dir)
    start = time.monotonic()
    with pytest.raises(TrackerUnavailable, match=r"cannot use MLflow at http://127\.0\.0\.1:\d+") as info:
        sync_cli("mlflow", RUN_ID, "--tracking-uri", f"http://127.0.0.1:{_free_port()}")
    assert time.monotonic() - start < 5 and "\n" not in str(info.value)
    # a server that accepts the connection but never answers: the timeout ends it, no retries
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        start = time.monotonic()
        with pytest.raises(TrackerUnavailable, match="cannot use MLflow"):
            sync_cli("mlflow", RUN_ID, "--tracking-uri", f"http://127.0.0.1:{silent.getsockname()[1]}",
                     "--timeout", "1")
        assert time.monotonic() - start < 6
    assert snapshot(run_dir) == before


def test_live_hooks_log_each_epoch_and_finish_completes_the_run(env):
    from src.pipelines.context import TrainContext
    from src.tasks.contract import PreparedData
    from src.tracking.live import start_live_tracking

    run_dir = make_run(env.outputs, status="running", epochs=0)
    config = {**CONFIG, "tracking": {"mlflow": {"enabled": True, "tracking_uri": env.uri,
                                                "experiment": env.experiment}}}
    live = start_live_tracking(config, run_dir, RUN_ID)
    assert len(live.hooks) == 1
    ctx = TrainContext(config=config, config_hash="abcd1234", task="detection", subtask="vehicle_detection", seed=42,
                       device="cpu", run_id=RUN_ID, run_dir=run_dir, metadata={},
                       data=PreparedData(names=[], record={}),
                       epoch_hooks=live.hooks)
    mlflow_run_id = runs_of(env)[0].info.run_id
    for epoch, loss, value in ROWS:
        ctx.log_epoch(epoch, {"train/box_loss": loss, "val/mAP50-95": value})
        assert history(env, mlflow_run_id, "val/mAP50-95")[-1] == (epoch, value)  # logged as it happened
    finish_run(run_dir)
    live.finish()
    run = env.client.get_run(mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["best_val_metric"] == 0.25
    assert history(env, mlflow_run_id, "val/mAP50-95") == [(1, 0.1), (2, 0.2), (3, 0.25)]  # finish adds no copies
    assert len(runs_of(env)) == 1


def test_live_tracking_failure_warns_and_training_goes_on(env, capsys, cli_output):
    from src.pipelines.context import TrainContext
    from src.tasks.contract import PreparedData
    from src.tracking.live import start_live_tracking

    run_dir = make_run(env.outputs, status="running", epochs=0)
    dead = {**CONFIG, "tracking": {"mlflow": {"enabled": True, "tracking_uri": f"http://127.0.0.1:{_free_port()}"}}}
    assert start_live_tracking(dead, run_dir, RUN_ID).hooks == []
    assert "warning: MLflow tracking failed at the start" in capsys.readouterr().err

    config = {**CONFIG, "tracking": {"mlflow": {"enabled": True, "tracking_uri": env.uri,
                                                "experiment": env.experiment}}}
    live = start_live_tracking(config, run_dir, RUN_ID)
    ctx = TrainContext(config=config, config_hash="abcd1234", task="detection", subtask="vehicle_detection", seed=42,
                       device="cpu", run_id=RUN_ID, run_dir=run_dir, metadata={},
                       data=PreparedData(names=[], record={}),
                       epoch_hooks=live.hooks)
    ctx.log_epoch(1, {"val/mAP50-95": 0.1})
    env.client.delete_run(runs_of(env)[0].info.run_id)  # MLflow now refuses to log to it
    ctx.log_epoch(2, {"val/mAP50-95": 0.2})
    ctx.log_epoch(3, {"val/mAP50-95": 0.3})
    err = capsys.readouterr().err
    assert err.count("warning: MLflow tracking failed at epoch 2") == 1 and "epoch 3" not in err  # warned once
    assert f"street-scene sync mlflow {RUN_ID}" in err
    assert [r["epoch"] for r in ctx.history] == [1, 2, 3]  # training's own record is complete
    live.finish()  # the tracker was switched off: nothing to do, nothing raised


@pytest.mark.slow
def test_real_mlflow_server_sync_register_and_unreachable(env, tmp_path):
    """A real `mlflow server` on loopback: sync, re-sync, register; then stop it and get a fast error."""
    from mlflow.tracking import MlflowClient

    from src.tracking.common import TrackerUnavailable

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        cwd=tmp_path, env=subprocess_env({"MLFLOW_DISABLE_TELEMETRY": "true"}), stdout=log, stderr=log)
    try:
        _wait_for(url + "/health", server, tmp_path / "server.log")
        run_dir = make_run(env.outputs)
        argv = ["mlflow", RUN_ID, "--tracking-uri", url, "--experiment", "server-exp", "--register-model", "vehicles"]
        assert sync_cli(*argv) == 0
        assert sync_cli(*argv) == 0
        client = MlflowClient(url)
        exp = client.get_experiment_by_name("server-exp")
        runs = client.search_runs([exp.experiment_id])
        assert len(runs) == 1 and runs[0].data.tags["street_scene.run_id"] == RUN_ID
        assert [(m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, "val/mAP50-95")] == \
            [(1, 0.1), (2, 0.2), (3, 0.25)]
        assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} >= {"config.yaml", "model"}
        versions = client.search_model_versions("name='vehicles'")
        assert len(versions) == 1 and versions[0].tags["street_scene.config_hash"] == "abcd1234"
        stored = list((tmp_path / "server-artifacts").rglob("best_model.pth"))  # uploaded through the server
        assert len(stored) == 1 and stored[0].read_bytes() == CKPT
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    start = time.monotonic()
    with pytest.raises(TrackerUnavailable):
        sync_cli("mlflow", run_dir, "--tracking-uri", url)
    assert time.monotonic() - start < 5


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, whatever the env says


def _wait_for(url: str, server: subprocess.Popen, log: Path, limit: float = 90.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with _NO_PROXY.open(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer within {limit:.0f} s:\n{log.read_text()[-3000:]}")


def _retag(run_dir: Path, **fields) -> None:
    meta = load_yaml(run_dir / "metadata.yaml")
    meta.update(fields)
    atomic_write_text(run_dir / "metadata.yaml", dump_yaml(meta))


def test_a_model_of_another_task_is_refused_under_an_existing_name(env, capsys):
    from src.cli.main import main

    make_run(env.outputs)
    name = f"vehicles-{env.experiment}"
    argv = ["--tracking-uri", env.uri, "--experiment", env.experiment, "--register-model", name]
    assert sync_cli("mlflow", RUN_ID, *argv) == 0
    seg = make_run(env.outputs, "20240116_000000_road_scene")
    _retag(seg, task="segmentation", subtask="road_scene_segmentation")
    capsys.readouterr()
    assert main(["sync", "mlflow", seg.name, *argv]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: MLflow model '{name}' holds detection models (vehicle_detection), not segmentation "
                   f"(road_scene_segmentation) like run {seg.name}; register it under another --register-model name"]
    assert [r.data.tags["street_scene.run_id"] for r in runs_of(env)] == [RUN_ID]  # nothing logged for it
    assert len(env.client.search_model_versions(f"name='{name}'")) == 1
    # a subtask of the same task is another model too
    _retag(seg, task="detection", subtask="pedestrian_detection")
    with pytest.raises(UserError, match=r"holds detection models \(vehicle_detection\), not detection "
                                        r"\(pedestrian_detection\)"):
        sync_cli("mlflow", seg.name, *argv)
    assert len(runs_of(env)) == 1


def test_versions_registered_outside_street_scene_are_not_mixed_with_ours(env):
    make_run(env.outputs)
    name = f"foreign-{env.experiment}"
    env.client.create_registered_model(name)
    env.client.create_model_version(name, source=str(env.root / "somewhere"))
    with pytest.raises(UserError, match="was not registered by street-scene"):
        sync_cli("mlflow", RUN_ID, "--tracking-uri", env.uri, "--experiment", env.experiment, "--register-model", name)
    assert runs_of(env) == []


def test_artifact_location_option_env_and_default_beside_the_database(env, tmp_path, monkeypatch):
    from src.tracking.mlflow_sync import MlflowTarget

    make_run(env.outputs)
    # default: beside the sqlite database, not under the current folder (tmp_path here)
    default = MlflowTarget(env.uri, env.experiment)
    location = Path(env.client.get_experiment(default.experiment_id).artifact_location)
    assert location == env.root / "mlartifacts" / env.experiment
    # the option: <root>/<experiment>
    assert sync_cli("mlflow", RUN_ID, "--tracking-uri", env.uri, "--experiment", f"{env.experiment}-opt",
                    "--mlflow-artifact-location", tmp_path / "store") == 0
    exp = env.client.get_experiment_by_name(f"{env.experiment}-opt")
    assert Path(exp.artifact_location) == tmp_path / "store" / f"{env.experiment}-opt"
    assert any((tmp_path / "store" / f"{env.experiment}-opt").rglob("config.yaml"))  # the files went there
    # the environment variable, the same way
    monkeypatch.setenv("STREET_SCENE_MLFLOW_ARTIFACTS", str(tmp_path / "env-store"))
    target = MlflowTarget(env.uri, f"{env.experiment}-env")
    assert Path(env.client.get_experiment(target.experiment_id).artifact_location).parent == tmp_path / "env-store"
    # an existing experiment keeps its location: asking for another one is refused, in one line
    with pytest.raises(UserError, match=r"stores its artifacts at .*, not under .*elsewhere") as info:
        sync_cli("mlflow", RUN_ID, "--tracking-uri", env.uri, "--experiment", env.experiment,
                 "--mlflow-artifact-location", tmp_path / "elsewhere")
    assert "\n" not in str(info.value)


def test_ultralytics_and_evaluation_files_are_uploaded_under_their_folders(env):
    from PIL import Image

    run_dir = make_run(env.outputs)
    ultra = run_dir / "ultralytics"
    (ultra / "weights").mkdir(parents=True)
    atomic_write_text(ultra / "args.yaml", "epochs: 3\n")
    atomic_write_text(ultra / "results.csv", "epoch,x\n1,2\n")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(ultra / "confusion_matrix.png")
    atomic_write_bytes(ultra / "weights" / "last.pt", b"pickled")  # never uploaded
    evaluation = run_dir / "evaluations" / "20240115_150000_best_model"
    evaluation.mkdir(parents=True)
    Image.new("RGB", (8, 8), (0, 255, 0)).save(evaluation / "val_batch0_pred.jpg")
    atomic_write_text(run_dir / "evaluations" / "20240115_150000_best_model.json", "{}")
    result = sync_cli("mlflow", RUN_ID, "--tracking-uri", env.uri, "--experiment", env.experiment)
    assert result == 0
    (run,) = runs_of(env)
    listed = {a.path for folder in ("ultralytics", "evaluations", "evaluations/20240115_150000_best_model")
              for a in env.client.list_artifacts(run.info.run_id, folder) if not a.is_dir}
    assert listed == {"ultralytics/args.yaml", "ultralytics/results.csv", "ultralytics/confusion_matrix.png",
                      "evaluations/20240115_150000_best_model.json",
                      "evaluations/20240115_150000_best_model/val_batch0_pred.jpg"}


def test_a_failed_registration_leaves_no_registered_model_behind(env, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    make_run(env.outputs)
    name = f"broken-{env.experiment}"

    def refuse(self, *args, **kwargs):
        raise MlflowException("model registry is read-only")

    monkeypatch.setattr(MlflowClient, "create_model_version", refuse)
    with pytest.raises(UserError, match="model registry is read-only"):
        sync_cli("mlflow", RUN_ID, "--tracking-uri", env.uri, "--experiment", env.experiment, "--register-model", name)
    assert env.client.search_registered_models(f"name='{name}'") == []
