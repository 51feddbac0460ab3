"""End to end through scripts/train.py: a run whose loss becomes NaN fails at once and is never registered, and a
subtask defined in a config alone trains, registers, evaluates and reproduces with no code change."""

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.detection_e2e_support import VEHICLE_CLASSES, registry_entries, workspace_env
from tests.helpers import REPO_ROOT, run_cli, run_script

DET = REPO_ROOT / "configs" / "detection_config.yaml"
SEG = REPO_ROOT / "configs" / "segmentation_config.yaml"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    from src.data.synthetic import make_detection_dataset, make_segmentation_dataset

    ws = tmp_path_factory.mktemp("nonfinite")
    make_detection_dataset("vehicle_detection", ws / "data" / "det", 4, 2, 2, 0, image_size=64)
    make_segmentation_dataset(ws / "data" / "seg", 4, 2, 2, 0, image_size=(64, 32))
    return ws


def _assert_run_failed_in_one_line(proc, ws, pattern):
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and re.search(pattern, lines[0]), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    [run_dir] = list((ws / "outputs").iterdir())
    from src.common.metadata import read_metadata

    meta = read_metadata(run_dir)
    assert meta["status"] == "failed" and re.search(pattern, meta["error"])
    assert registry_entries(ws) == []
    shutil.rmtree(ws / "outputs")


@pytest.mark.slow
def test_nan_weights_fail_a_detection_run_at_the_first_step(ws):
    import torch

    from src.tasks.detection.offline import configure_ultralytics, default_config_dir
    from src.tasks.detection.weights import plain_data

    configure_ultralytics(default_config_dir())
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=len(VEHICLE_CLASSES), verbose=False)
    state = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    spec = {"architecture": "yolov8n.yaml", "model_yaml": plain_data(model.yaml), "names": VEHICLE_CLASSES,
            "imgsz": 64}
    torch.save({"model_state": state, "model_spec": spec}, ws / "nan.pth")
    proc = run_script("train.py", "--config", DET, "--task", "detection", "--detection-task", "vehicle_detection",
                      "--train-data", "data/det/train", "--val-data", "data/det/val",
                      "--config-override", f"detection.model.weights={ws / 'nan.pth'}",
                      "--config-override", "detection.training.image_size=64",
                      "--config-override", "detection.training.batch_size=2",
                      "--config-override", "detection.training.plots=false", cwd=ws, env=workspace_env(ws))
    _assert_run_failed_in_one_line(proc, ws, r"training loss became nan at epoch 1")


@pytest.mark.slow
def test_nan_weights_fail_a_segmentation_run_at_the_first_step(ws):
    import torch

    from src.tasks.segmentation.models import build_model

    net = build_model("lraspp_mobilenet_v3_large", 8).net
    torch.save({k: v.float().fill_(float("nan")) if v.is_floating_point() else v for k, v in net.state_dict().items()},
               ws / "nan_seg.pth")
    proc = run_script("train.py", "--config", SEG, "--task", "segmentation", "--subtask", "road_scene_segmentation",
                      "--train-data", "data/seg/train",
                      "--val-data", "data/seg/val", "--config-override", f"segmentation.model.weights={ws / 'nan_seg.pth'}",
                      "--config-override", "segmentation.training.batch_size=2",
                      "--config-override", "segmentation.training.crop_size=[32,64]", cwd=ws, env=workspace_env(ws))
    _assert_run_failed_in_one_line(proc, ws, r"training loss became nan at epoch 1, step 1")


@pytest.mark.slow
def test_a_subtask_defined_only_in_a_config_trains_registers_evaluates_and_reproduces(ws, tmp_path):
    config = tmp_path / "highway.yaml"
    config.write_text(SEG.read_text().replace(
        "  tasks:                    # the subtasks",
        "  tasks:\n    highway_segmentation:\n      classes: [road, sidewalk, building, vegetation, sky, vehicle, "
        "person, traffic_sign]\n      ignore_index: 255\n  # the shipped subtasks", 1))
    common = ("--config", config, "--task", "segmentation", "--subtask", "highway_segmentation")
    small = ("--config-override", "segmentation.training.epochs=1", "--config-override",
             "segmentation.training.batch_size=2", "--config-override", "segmentation.training.crop_size=[32,64]")
    env = workspace_env(ws)
    train = run_script("train.py", *common, "--train-data", "data/seg/train", "--val-data", "data/seg/val", *small,
                       "--run-name", "highway", cwd=ws, env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    run_id = train.stdout.strip().splitlines()[-1].removeprefix("Run ID: ")
    [entry] = [e for e in registry_entries(ws) if e["run_id"] == run_id]
    assert entry["task"] == "highway_segmentation"
    listed = run_cli("registry", "list", "--task", "highway_segmentation", cwd=ws, env=env)
    assert listed.returncode == 0 and run_id in listed.stdout
    evaluate = run_script("evaluate.py", *common, "--test-data", "data/seg/test", "--checkpoint",
                          f"outputs/{run_id}/best_model.pth", "--verify-config", "--json", *small, cwd=ws, env=env)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert json.loads(evaluate.stdout)["subtask"] == "highway_segmentation"
    assert "Config hash verified" in evaluate.stderr
    repro = run_cli("reproduce", run_id, cwd=ws, env=env)
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-3000:]
    assert "bit-exact" in repro.stdout
    assert Path(entry["checkpoint_path"]).is_file()
