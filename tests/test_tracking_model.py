"""`sync mlflow --register-model` against a real local store, with a real trained run: the registered version is
an MLflow pyfunc model that `mlflow.pyfunc.load_model("models:/NAME/1")` loads and predicts with, giving what
street-scene's own predictor gives; ultralytics' files (args.yaml, plots, prediction images) are uploaded too.

One tiny detection run (1 epoch, 64 px, 4 images, ultralytics plots on) and one ONNX export are made for the
module; the tracking store is a sqlite database under tmp.
"""

import argparse
import socket
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # trains and exports a model

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = ["device=cpu", "detection.training.epochs=1", "detection.training.batch_size=4",
             "detection.training.image_size=64"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, offline):
    """A completed tiny detection run (ultralytics plots included), its data, and a sqlite tracking store."""
    from src.data.synthetic import make_detection_dataset
    from src.pipelines.runner import TrainRequest, train

    root = tmp_path_factory.mktemp("model")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("STREET_SCENE_SEED", raising=False)
        for var, sub in (("STREET_SCENE_OUTPUT_DIR", "outputs"), ("STREET_SCENE_REGISTRY", "registry.json"),
                         ("STREET_SCENE_CACHE", "cache")):
            mp.setenv(var, str(root / sub))
        mp.chdir(root)
        make_detection_dataset("vehicle_detection", root / "data", 4, 2, 0, seed=0, image_size=64)
        result = train(TrainRequest(config_path=REPO / "configs" / "detection_config.yaml", task="detection",
                                    subtask="vehicle_detection", train_data=str(root / "data" / "train"),
                                    val_data=str(root / "data" / "val"), run_name="tiny", overrides=OVERRIDES))
    return argparse.Namespace(root=root, run_dir=result.run_dir, run_id=result.run_id,
                              uri=f"sqlite:///{root / 'mlflow.db'}", artifacts=root / "artifact-root",
                              images=sorted((root / "data" / "val" / "images").iterdir()))


@pytest.fixture(scope="module")
def registered(trained):
    """The first `sync mlflow --register-model vehicles`, from another cwd, with every socket connection recorded."""
    with pytest.MonkeyPatch.context() as mp:
        cwd = trained.root / "elsewhere"
        cwd.mkdir()
        mp.chdir(cwd)
        mp.setenv("STREET_SCENE_OUTPUT_DIR", str(trained.run_dir.parent))
        mp.delenv("STREET_SCENE_MLFLOW_ARTIFACTS", raising=False)
        connections = record_connections(mp)
        code = sync(trained.run_id, "--tracking-uri", trained.uri, "--experiment", "model-exp",
                    "--register-model", "vehicles", "--mlflow-artifact-location", trained.artifacts)
    return argparse.Namespace(code=code, connections=connections)


@pytest.fixture
def env(trained, registered, tmp_path, monkeypatch):
    """MLflow's URIs point at the module's store (what load_model("models:/...") resolves against)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STREET_SCENE_OUTPUT_DIR", str(trained.run_dir.parent))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.delenv("STREET_SCENE_MLFLOW_ARTIFACTS", raising=False)
    from mlflow.tracking import MlflowClient

    return MlflowClient(trained.uri)


def sync(*argv) -> int:
    from src.cli.main import main

    return main(["sync", "mlflow", *map(str, argv)])


def rgb(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def all_artifacts(client, run_id: str, folder=None) -> set:
    out = set()
    for info in client.list_artifacts(run_id, folder):
        out |= all_artifacts(client, run_id, info.path) if info.is_dir else {info.path}
    return out


def record_connections(monkeypatch) -> list:
    """Record every socket connection attempt (loopback included) from here on."""
    attempts = []
    real = socket.socket.connect

    def connect(sock, address):
        attempts.append(address)
        return real(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


def test_registered_model_loads_with_pyfunc_and_predicts_like_the_predictor(trained, registered, env):
    import mlflow
    import pandas as pd

    from src.common.yaml_io import load_yaml
    from src.inference.predictor import load_predictor

    assert registered.code == 0
    assert registered.connections == []  # no requirement resolution, no telemetry: no socket at all

    (version,) = [v for v in env.search_model_versions("name='vehicles'") if str(v.version) == "1"]
    recorded = load_yaml(trained.run_dir / "metadata.yaml")
    tags = version.tags
    assert tags["street_scene.run_id"] == trained.run_id
    assert tags["street_scene.config_hash"] == recorded["config_hash"]
    assert (tags["street_scene.task"], tags["street_scene.subtask"]) == ("detection", "vehicle_detection")
    assert tags["street_scene.checkpoint_sha256"] == recorded["result"]["checkpoint_sha256"]
    exp = env.get_experiment_by_name("model-exp")
    assert Path(exp.artifact_location) == trained.artifacts.resolve() / "model-exp"

    model = mlflow.pyfunc.load_model("models:/vehicles/1")
    reference = load_predictor(trained.run_dir / "best_model.pth")
    images = [rgb(p) for p in trained.images]
    expected = reference.predict_arrays(images, conf=0.0001)
    assert sum(len(r["detections"]) for r in expected) > 0  # a comparison of empty lists would prove nothing
    assert model.predict(images, params={"conf": 0.0001}) == expected
    assert model.predict(images[0], params={"conf": 0.0001}) == expected[:1]
    encoded = [p.read_bytes() for p in trained.images]
    by_bytes = model.predict(pd.DataFrame({"image": encoded}), params={"conf": 0.0001})
    assert [r["detections"] for r in by_bytes] == [r["detections"] for r in expected]
    by_path = model.predict(pd.DataFrame({"image": [str(p) for p in trained.images]}), params={"conf": 0.0001})
    assert [r["image"] for r in by_path] == [str(p) for p in trained.images]
    assert model.metadata.metadata["street_scene"]["checkpoint_sha256"] == tags["street_scene.checkpoint_sha256"]
    with pytest.raises(ValueError, match="unknown predict param 'confidence'"):
        model._model_impl.python_model.predict(None, images, params={"confidence": 0.5})


def test_run_files_ultralytics_plots_and_the_model_are_uploaded(trained, env):
    (version,) = [v for v in env.search_model_versions("name='vehicles'") if str(v.version) == "1"]
    files = all_artifacts(env, version.run_id)
    model_dir = version.source.split(f"runs:/{version.run_id}/", 1)[1]
    assert model_dir.startswith("model/")
    assert {f"{model_dir}/MLmodel", f"{model_dir}/artifacts/best_model.pth", f"{model_dir}/requirements.txt",
            f"{model_dir}/code/src/inference/predictor.py"} <= files
    # ultralytics wrote these under <run dir>/ultralytics (src/tasks/detection/task.py ULTRALYTICS_DIR)
    assert {"ultralytics/args.yaml", "ultralytics/results.csv", "ultralytics/results.png",
            "ultralytics/confusion_matrix.png", "ultralytics/BoxPR_curve.png", "ultralytics/val_batch0_pred.jpg",
            "config.yaml", "metadata.yaml", "metrics.csv", "training_curves.png"} <= files
    assert not any(f.startswith("ultralytics/weights") for f in files)
    local = env.download_artifacts(version.run_id, "ultralytics/args.yaml", str(trained.root / "dl"))
    assert Path(local).read_bytes() == (trained.run_dir / "ultralytics" / "args.yaml").read_bytes()
    requirements = env.download_artifacts(version.run_id, f"{model_dir}/requirements.txt", str(trained.root / "dl"))
    pins = Path(requirements).read_text().split()
    assert "ultralytics==8.4.190" in pins and any(p.startswith("torch==") for p in pins)


def test_resync_reuses_the_version_and_an_onnx_export_makes_a_new_one(trained, env):
    import mlflow

    from src.inference.export import ExportRequest, export_model

    argv = [trained.run_id, "--tracking-uri", trained.uri, "--experiment", "model-exp", "--register-model",
            "vehicles"]
    assert sync(*argv) == 0
    assert len(env.search_model_versions("name='vehicles'")) == 1  # same weights: same version
    exported = export_model(ExportRequest(checkpoint=str(trained.run_dir / "best_model.pth"), format="onnx"))
    assert sync(*argv) == 0
    versions = {str(v.version): v for v in env.search_model_versions("name='vehicles'")}
    assert sorted(versions) == ["1", "2"]
    assert versions["2"].tags["street_scene.onnx_sha256"] == exported["sha256"]
    assert "street_scene.onnx_sha256" not in versions["1"].tags
    files = all_artifacts(env, versions["2"].run_id)
    model_dir = versions["2"].source.split(f"runs:/{versions['2'].run_id}/", 1)[1]
    assert f"{model_dir}/artifacts/best_model.onnx" in files

    from src.inference.predictor import load_predictor

    images = [rgb(p) for p in trained.images]
    onnx_model = mlflow.pyfunc.load_model("models:/vehicles/2", model_config={"weights": "onnx"})
    assert onnx_model._model_impl.python_model.predictor.format == "onnx"
    by_onnx = onnx_model.predict(images, params={"conf": 0.0001})
    by_torch = load_predictor(trained.run_dir / "best_model.pth").predict_arrays(images, conf=0.0001)
    # near the threshold, float noise may add or drop a box; every clear detection must be in both
    for torch_record, onnx_record in zip(by_torch, by_onnx):
        clear = [d for d in torch_record["detections"] if d["confidence"] >= 0.0005]
        assert clear, "nothing to compare"
        for d in clear:
            assert any(o["class_id"] == d["class_id"] and o["confidence"] == pytest.approx(d["confidence"], abs=1e-4)
                       and o["box_xyxy"] == pytest.approx(d["box_xyxy"], abs=0.05) for o in onnx_record["detections"])


def test_another_task_under_the_same_name_is_refused_before_anything_is_logged(trained, env, tmp_path, capsys):
    """A copy of the run that says it is a pedestrian detector: refused with one line, exit 2, nothing logged."""
    import shutil

    from src.common.atomic import atomic_write_text
    from src.common.yaml_io import dump_yaml, load_yaml

    other = tmp_path / "outputs" / "20240101_000000_pedestrians"
    shutil.copytree(trained.run_dir, other, ignore=shutil.ignore_patterns("ultralytics", "exports*", "*epoch*"))
    meta = load_yaml(other / "metadata.yaml")
    meta.update(run_id=other.name, subtask="pedestrian_detection")
    atomic_write_text(other / "metadata.yaml", dump_yaml(meta))
    versions_before = len(env.search_model_versions("name='vehicles'"))
    assert sync(other, "--tracking-uri", trained.uri, "--experiment", "model-exp",
                "--register-model", "vehicles") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: MLflow model 'vehicles' holds detection models "
                                               "(vehicle_detection), not detection (pedestrian_detection)")
    exp = env.get_experiment_by_name("model-exp")
    tagged = env.search_runs([exp.experiment_id], filter_string=f"tags.`street_scene.run_id` = '{other.name}'")
    assert tagged == []  # no MLflow run was created for it
    assert len(env.search_model_versions("name='vehicles'")) == versions_before
    # under its own name it registers
    assert sync(other, "--tracking-uri", trained.uri, "--experiment", "model-exp",
                "--register-model", "pedestrians") == 0
