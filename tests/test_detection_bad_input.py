"""Bad input to detection train/evaluate, as a user hits it: exit code 2, exactly one `error: ...` line on stderr,
no traceback, no run directory, nothing registered, nothing saved beside the checkpoint.

Every case gets its own cwd with a copy of good data and checkpoints, spoiled in one way; the commands of all cases
run as subprocesses, a few at a time (each mostly waits on `import torch`), and each test checks one result.
The checkpoints are made once without training: an untrained yolov8n in our format (so everything but the bad
part is valid), a segmentation-task checkpoint, raw ultralytics `.pt` files, a truncated copy and random bytes.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.detection_e2e_support import (CONFIG, DATASETS, IMGSZ_64, NO_PLOTS, TRAIN_SECTION, VEHICLE_CLASSES,
                                         VEHICLE_YAML, assert_user_error, load_yaml, make_data, workspace_env)
from tests.helpers import run_script, subprocess_env

pytestmark = pytest.mark.slow  # subprocesses

MAKE_CHECKPOINTS = textwrap.dedent("""
    import sys
    from pathlib import Path

    from src.tasks.detection.offline import configure_ultralytics, default_config_dir

    configure_ultralytics(default_config_dir())  # before ultralytics is imported
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    from src.common.checkpoint import build_checkpoint, save_checkpoint
    from src.common.config_manager import ConfigManager
    from src.tasks.detection.weights import fp32_cpu_state, plain_data

    out, cm = Path(sys.argv[1]), ConfigManager(sys.argv[2])
    names = cm.get_config()["detection"]["tasks"]["vehicle_detection"]["classes"]
    YOLO("yolov8n.yaml").save(out / "coco80.pt")  # raw ultralytics checkpoints: pickled model classes
    module = DetectionModel("yolov8n.yaml", nc=len(names), verbose=False)
    module.names = dict(enumerate(names))
    vehicle_pt = YOLO("yolov8n.yaml")
    vehicle_pt.model = module
    vehicle_pt.save(out / "vehicle5.pt")
    spec = {"architecture": "yolov8n.yaml", "model_yaml": plain_data(module.yaml), "names": names, "imgsz": 64}
    common = dict(epoch=1, metrics={}, config=cm.get_config(), config_hash=cm.get_config_hash(),
                  metadata={"run_id": "handmade"})
    save_checkpoint(out / "vehicle.pth", build_checkpoint(task="detection", subtask="vehicle_detection",
                    model_state=fp32_cpu_state(module), model_spec=spec, **common))
    save_checkpoint(out / "segmentation.pth", build_checkpoint(task="segmentation",
                    subtask="road_scene_segmentation", model_state={"head.weight": torch.zeros(8, 4)},
                    model_spec={"architecture": "fcn_resnet50", "num_classes": 8}, **common))
""")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input_assets")
    make_data(root / "data", n_train=4, n_val=2, n_test=2, seed=2)
    ckpts = root / "ckpts"
    ckpts.mkdir()
    proc = subprocess.run([sys.executable, "-c", MAKE_CHECKPOINTS, str(ckpts), str(CONFIG)], cwd=root,
                          env=subprocess_env(workspace_env(root)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = (ckpts / "vehicle.pth").read_bytes()
    (ckpts / "truncated.pth").write_bytes(data[: len(data) // 2])
    (ckpts / "random.pth").write_bytes(bytes(range(256)) * 64)
    return root


# ---------------------------------------------------------------- the cases: spoil the workspace, then a command


def _label(ws, split, index=0):
    return sorted((ws / "data" / split / "labels").glob("*.txt"))[index]


def _write(path_of, text):
    return lambda ws: path_of(ws).write_text(text)


def _train(*args, train="data/train", val="data/val", data_yaml=VEHICLE_YAML, section=TRAIN_SECTION):
    flags = ["--data-yaml", data_yaml] if data_yaml else []
    overrides = [a for o in (IMGSZ_64, "detection.training.epochs=1", *NO_PLOTS) for a in ("--config-override", o)]
    return ("train.py", "--config", CONFIG, *section, "--train-data", train, "--val-data", val, *flags, *overrides,
            *args)


def _evaluate(checkpoint, *args, test="data/test", data_yaml=VEHICLE_YAML, section=TRAIN_SECTION):
    flags = ["--data-yaml", data_yaml] if data_yaml else []
    return ("evaluate.py", "--config", CONFIG, *section, "--test-data", test, "--checkpoint", checkpoint, *flags,
            *args)


def _mkdirs(*names):
    return lambda ws: [(ws / n).mkdir(parents=True) for n in names]


def _corrupt_images(ws):
    for image in (ws / "data" / "train" / "images").glob("*.jpg"):
        image.write_bytes(b"not a jpeg" * 30)


# id -> (spoil(ws) or None, command, pattern of the one error line)
TRAIN_CASES = {
    "train data missing": (None, _train(train="data/nope"), r"train data data/nope does not exist"),
    "train data empty folder": (_mkdirs("empty"), _train(train="empty"), r"train data empty has no images/ folder"),
    "train data empty images and labels": (_mkdirs("empty/images", "empty/labels"), _train(train="empty"),
                                           r"train data empty: no images found"),
    "train data without labels folder": (lambda ws: shutil.rmtree(ws / "data" / "train" / "labels"), _train(),
                                         r"has images/ but no labels/ folder"),
    "image without label file": (lambda ws: _label(ws, "train").unlink(), _train(),
                                 r"1 of 4 images have no label file"),
    "class id out of range": (_write(lambda ws: _label(ws, "train"), "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n"),
                              _train(), r"line 2: class id 7 is not one of 0\.\.4"),
    "label with four columns": (_write(lambda ws: _label(ws, "train"), "0 0.5 0.5 0.2\n"), _train(),
                                r"line 1: expected 5 columns"),
    "pixel coordinates": (_write(lambda ws: _label(ws, "train"), "0 32 32 10 10\n"), _train(),
                          r"line 1: coordinates .* are not normalized"),
    "bad validation label": (_write(lambda ws: _label(ws, "val"), "9 0.5 0.5 0.2 0.2\n"), _train(),
                             r"^error: val data data/val: label file .* class id 9"),
    "data yaml without names": (_write(lambda ws: ws / "d.yaml", "nc: 5\n"), _train(data_yaml="d.yaml"),
                                r"data yaml d\.yaml has no 'names:'"),
    "data yaml with download": (
        _write(lambda ws: ws / "d.yaml", f"names: {VEHICLE_CLASSES}\ndownload: https://example.com/x.zip\n"),
        _train(data_yaml="d.yaml"), r"has a 'download:' key, which ultralytics would execute"),
    "data yaml of other classes": (_write(lambda ws: ws / "d.yaml", "names: [car, truck]\n"),
                                   _train(data_yaml="d.yaml"),
                                   r"class names in d\.yaml .* differ from detection\.tasks\.vehicle_detection"),
    "data yaml missing": (None, _train(data_yaml="nope.yaml"), r"data yaml nope\.yaml not found"),
    "unknown detection task": (None, _train(section=("--task", "detection", "--detection-task", "boat_detection")),
                               r"unknown subtask 'boat_detection' for --task detection; choose one of vehicle_detection, "
                               r"pedestrian_detection, traffic_sign_detection"),
    "run name ../x": (None, _train("--run-name", "../x"), r"invalid run name '\.\./x'"),
}
EVAL_CASES = {
    "checkpoint missing": (None, _evaluate("ckpts/nope.pth"), r"checkpoint not found: ckpts/nope\.pth"),
    "checkpoint random bytes": (None, _evaluate("ckpts/random.pth"),
                                r"cannot read checkpoint ckpts/random\.pth: corrupt, truncated or not a torch file"),
    "checkpoint truncated": (None, _evaluate("ckpts/truncated.pth"),
                             r"cannot read checkpoint ckpts/truncated\.pth: corrupt, truncated or not a torch file"),
    "ultralytics pt without flag": (None, _evaluate("ckpts/vehicle5.pt"),
                                    r"needs unpickling of Python code .*--allow-legacy-checkpoint"),
    "checkpoint of other classes": (None, _evaluate("ckpts/vehicle.pth",
                                                    data_yaml=DATASETS / "pedestrian_detection.yaml"),
                                    r"checkpoint classes \['car', .*\] differ from the classes in .*pedestrian"),
    "checkpoint of another detection task": (
        None, _evaluate("ckpts/vehicle.pth", data_yaml=DATASETS / "pedestrian_detection.yaml",
                        section=("--task", "detection", "--detection-task", "pedestrian_detection")),
        r"trained for vehicle_detection, but the evaluation is for pedestrian_detection"),
    "segmentation checkpoint": (None, _evaluate("ckpts/segmentation.pth"),
                                r"is a segmentation model, but --task is detection"),
    "test data missing": (None, _evaluate("ckpts/vehicle.pth", test="data/nope"),
                          r"test data data/nope does not exist"),
    "bad test label": (_write(lambda ws: _label(ws, "test"), "0 0.5 0.5\n"), _evaluate("ckpts/vehicle.pth"),
                       r"test data data/test: label file .* expected 5 columns"),
}
# Checked with ultralytics' own rules and by opening every image, still before any run dir exists.
LATE_CASES = {
    "optimizer Foo": (None, _train("--config-override", "detection.training.optimizer=Foo"),
                      r"detection.training.optimizer must be 'SGD', 'MuSGD'.*got 'Foo'"),
    "mosaic 5": (None, _train("--config-override", "detection.training.augmentation.mosaic=5"),
                 r"detection.training.augmentation.mosaic must be less than or equal to 1, got 5.0"),
    "corrupt images": (_corrupt_images, _train(), r"train_00000\.jpg"),
}
# Not errors: the legacy flag, with a raw .pt of the right classes and of the wrong ones.
LEGACY_CASES = {
    "legacy ok": (None, _evaluate("ckpts/vehicle5.pt", "--allow-legacy-checkpoint"), None),
    "legacy other classes": (None, _evaluate("ckpts/coco80.pt", "--allow-legacy-checkpoint"), None),
}
ALL_CASES = {**TRAIN_CASES, **EVAL_CASES, **LATE_CASES, **LEGACY_CASES}


def _run_case(root, assets, name):
    spoil, command, _ = ALL_CASES[name]
    ws = root / name.replace(" ", "_").replace("/", "_").replace(".", "dot")
    shutil.copytree(assets / "data", ws / "data")
    # hard links: cheap, and results saved "beside the checkpoint" would still land in this case's own folder
    shutil.copytree(assets / "ckpts", ws / "ckpts", copy_function=os.link)
    if spoil:
        spoil(ws)
    return ws, run_script(*command, cwd=ws, env=workspace_env(ws))


@pytest.fixture(scope="module")
def results(assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input_cases")
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(_run_case, root, assets, name) for name in ALL_CASES}
        return {name: future.result() for name, future in futures.items()}


def _nothing_written(ws):
    assert not (ws / "outputs").exists(), list((ws / "outputs").iterdir())
    assert not (ws / "registry").exists()
    assert not (ws / "ckpts" / "evaluations").exists()
    assert not (ws / "x").exists() and not (ws.parent / "x").exists()


@pytest.mark.parametrize("name", [*TRAIN_CASES, *EVAL_CASES])
def test_bad_input_is_one_clear_error_line(results, name):
    ws, proc = results[name]
    assert_user_error(proc, ALL_CASES[name][2])
    _nothing_written(ws)


@pytest.mark.parametrize("name", list(LATE_CASES))
def test_bad_input_that_reaches_training(results, name):
    ws, proc = results[name]
    assert_user_error(proc, ALL_CASES[name][2])
    _nothing_written(ws)


def test_checkpoint_fixture_is_valid(assets):
    """The control: the hand-made checkpoint loads, so the failures above come from the one spoiled part."""
    from src.common.checkpoint import load_checkpoint

    ckpt = load_checkpoint(assets / "ckpts" / "vehicle.pth")
    assert (ckpt["task"], ckpt["subtask"], ckpt["model_spec"]["names"]) == (
        "detection", "vehicle_detection", VEHICLE_CLASSES)
    info = load_yaml(assets / "data" / "dataset_info.yaml")
    assert {s: v["images"] for s, v in info["splits"].items()} == {"train": 4, "val": 2, "test": 2}


def test_legacy_flag_evaluates_a_raw_ultralytics_checkpoint_with_a_warning(results):
    ws, proc = results["legacy ok"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "unpickles code" in proc.stderr and "config verification skipped" in proc.stderr
    assert "Evaluation results (" in proc.stdout and "  per class:" in proc.stdout
    assert len(list((ws / "ckpts" / "evaluations").glob("*.json"))) == 1


def test_legacy_flag_still_checks_the_classes(results):
    ws, proc = results["legacy other classes"]
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0])
    assert "checkpoint classes ['0', '1'," in errors[0] and "'car', 'truck'" in errors[0]
    assert not (ws / "ckpts" / "evaluations").exists()
