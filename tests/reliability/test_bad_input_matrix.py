"""Bad input through the commands users type, as a table: every case exits 2 with exactly one `error:` line, no
traceback, no run directory, and the registry byte for byte as it was.

Config cases (unknown keys, wrong types, non-finite and out-of-range values, in the file and as overrides)
come first, then data, weights, checkpoints, resume, registry and other commands. All cases run once, a few at a
time, in a module fixture; each test then checks one result.
"""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.detection_e2e_support import workspace_env
from tests.helpers import REPO_ROOT, run_cli, run_script

DET = REPO_ROOT / "configs" / "detection_config.yaml"
SEG = REPO_ROOT / "configs" / "segmentation_config.yaml"
VEHICLE_YAML = REPO_ROOT / "configs" / "datasets" / "vehicle_detection.yaml"
ROAD_YAML = REPO_ROOT / "configs" / "datasets" / "road_scene_segmentation.yaml"


def det_train(*extra, config=DET):
    return ("train", "--config", config, "--task", "detection", "--detection-task", "vehicle_detection",
            "--train-data", "data/det/train", "--val-data", "data/det/val", "--data-yaml", VEHICLE_YAML, *extra)


def seg_train(*extra, config=SEG):
    return ("train", "--config", config, "--task", "segmentation", "--segmentation-task", "road_scene_segmentation",
            "--train-data", "data/seg/train", "--val-data", "data/seg/val", "--data-yaml", ROAD_YAML, *extra)


def det_override(*overrides):
    return det_train(*[a for o in overrides for a in ("--config-override", o)])


def seg_override(*overrides):
    return seg_train(*[a for o in overrides for a in ("--config-override", o)])


def det_file(old: str, new: str):
    """A copy of the shipped detection config with one text change (written by the fixture)."""
    return ("file", "detection_config.yaml", old, new)


def seg_file(old: str, new: str):
    return ("file", "segmentation_config.yaml", old, new)


# (case id, command, pattern the one error line must match)
CASES = [
    # ---- config file: unknown keys, types, values
    ("file typo key", det_file("    learning_rate: 0.01", "    learnng_rate: 0.01"),
     r"config .*: unknown config key detection.training.learnng_rate; did you mean detection.training.learning_rate"),
    ("file unknown section", det_file("checkpoint:", "checkpoints:"), r"unknown config key checkpoints"),
    ("file unknown top key", det_file("seed: 42", "seed: 42\nnotes: hi"), r"unknown config key notes"),
    ("file string for int", det_file("epochs: 20", "epochs: twenty"),
     r"detection.training.epochs must be a valid integer, got 'twenty'"),
    ("file nan lr", det_file("learning_rate: 0.01", "learning_rate: .nan"),
     r"detection.training.learning_rate must be a finite number"),
    ("file negative wd", det_file("weight_decay: 0.0005", "weight_decay: -1.0"),
     r"detection.training.weight_decay must be greater than or equal to 0"),
    ("file bool for float", det_file("momentum: 0.937", "momentum: yes"), r"detection.training.momentum must be"),
    ("file empty classes", det_file("classes: [pedestrian, cyclist]", "classes: []"),
     r"detection.tasks.pedestrian_detection.classes"),
    ("file duplicate key", det_file("  keep_last: 0", "  keep_last: 0\n  keep_last: 1"), r"duplicate key 'keep_last'"),
    ("file not a mapping", ("raw", "- a\n- b\n"), r"must be a YAML mapping"),
    ("file no task section", ("raw", "seed: 1\n"), r"has no task section"),
    ("file seg section for det", ("raw", SEG.read_text()), r"is a segmentation config .* but --task is detection"),
    ("file alias bomb", ("raw", "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))),
     r"expands its aliases"),
    ("file bad yaml", det_file("seed: 42", "seed: [42"), r"invalid YAML in .*line \d+"),
    ("seg file unknown key", seg_file("    hflip_prob: 0.5", "    hflip: 0.5"),
     r"unknown config key segmentation.training.hflip; did you mean segmentation.training.hflip_prob"),
    # ---- overrides
    ("ovr mixup ignored before", det_override("+detection.training.mixup=0.5"),
     r"unknown config key 'detection.training.mixup'.*detection.training.augmentation.mixup"),
    ("ovr unknown key", det_override("detection.training.epoch=3"), r"did you mean detection.training.epochs"),
    ("ovr lr nan", det_override("detection.training.learning_rate=.nan"), r"must be a finite number"),
    ("ovr lr inf", det_override("detection.training.learning_rate=.inf"), r"must be a finite number"),
    ("ovr lr negative", det_override("detection.training.learning_rate=-1"), r"must be greater than 0"),
    ("ovr lr above 1", det_override("detection.training.learning_rate=2"), r"must be less than or equal to 1"),
    ("ovr imgsz huge", det_override("detection.training.image_size=1000000000"), r"less than or equal to 4096"),
    ("ovr imgsz stride", det_override("detection.training.image_size=100"), r"multiple of 32"),
    ("ovr epochs zero", det_override("detection.training.epochs=0"), r"epochs must be greater than or equal to 1"),
    ("ovr batch text", det_override("detection.training.batch_size=big"), r"must be a valid integer"),
    ("ovr optimizer", det_override("detection.training.optimizer=auto"), r"must be 'SGD'"),
    ("ovr device", det_override("device=gpu"), r"device: must be auto, cpu, cuda or cuda:N"),
    ("ovr device absent gpu", det_override("device=cuda"), r"asks for CUDA but no GPU is available"),
    ("ovr conf", det_override("detection.evaluation.conf=1.5"), r"conf must be less than 1"),
    ("ovr seed negative", det_override("seed=-1"), r"seed -1 is out of range"),
    ("ovr mosaic >1", det_override("detection.training.augmentation.mosaic=2"), r"less than or equal to 1"),
    ("ovr ultralytics reserved", det_override("+detection.training.ultralytics.lr0=0.1"),
     r"lr0 is set by street-scene from detection.training.learning_rate"),
    ("ovr ultralytics unknown", det_override("+detection.training.ultralytics.time=1"),
     r"time is not an ultralytics training argument street-scene forwards"),
    ("ovr ultralytics type", det_override("+detection.training.ultralytics.cos_lr=1"), r"cos_lr must be true or false"),
    ("ovr architecture pt", det_override("detection.model.architecture=yolov8n.pt"),
     r"must be an ultralytics model yaml"),
    ("ovr plus existing", det_override("+detection.training.epochs=3"), r"already exists; drop the leading"),
    ("ovr malformed", det_override("detection.training.epochs"), r"malformed override"),
    ("ovr value below value", det_override("seed.x=1"), r"seed is a value, not a section"),
    ("ovr subtask bad name", det_override('+detection.tasks.1bad.classes=["x"]'), r"must start with a letter"),
    ("seg batch zero", seg_override("segmentation.training.batch_size=0"), r"batch_size must be greater than or"),
    ("seg epochs zero", seg_override("segmentation.training.epochs=0"), r"epochs must be greater than or equal"),
    ("seg crop negative", seg_override("segmentation.training.crop_size=[-1,64]"), r"crop_size\[0\] must be"),
    ("seg crop three", seg_override("segmentation.training.crop_size=[64,64,64]"), r"crop_size"),
    ("seg workers negative", seg_override("segmentation.training.workers=-1"), r"workers must be greater than"),
    ("seg optimizer", seg_override("segmentation.training.optimizer=foo"), r"must be 'sgd', 'adamw' or 'adam'"),
    ("seg architecture", seg_override("segmentation.model.architecture=foo"),
     r"must be 'lraspp_mobilenet_v3_large'"),
    ("seg lr nan", seg_override("segmentation.training.learning_rate=.nan"), r"must be a finite number"),
    ("seg scale range order", seg_override("segmentation.training.scale_range=[2.0,0.5]"), r"low <= high"),
    ("seg ignore is a class", seg_override("segmentation.tasks.road_scene_segmentation.ignore_index=3"),
     r"ignore_index 3 is the id of class 'vegetation'"),
    ("seg wandb mode", seg_override("tracking.wandb.mode=cloud"), r"must be 'offline' or 'online'"),
    # ---- command line, data and weights
    ("run name newline", det_train("--run-name", "abc\n"), r"invalid run name"),
    ("run name slash", det_train("--run-name", "a/b"), r"invalid run name"),
    ("unknown subtask", ("train", "--config", DET, "--task", "detection", "--detection-task", "bikes",
                         "--train-data", "data/det/train", "--val-data", "data/det/val"),
     r"unknown subtask 'bikes' for --task detection"),
    ("wrong family flag", ("train", "--config", DET, "--task", "detection", "--segmentation-task", "x",
                           "--train-data", "data/det/train", "--val-data", "data/det/val"),
     r"--segmentation-task does not apply to --task detection"),
    ("subtask flags disagree", ("train", "--config", DET, "--task", "detection", "--detection-task",
                                "vehicle_detection", "--subtask", "pedestrian_detection", "--train-data",
                                "data/det/train", "--val-data", "data/det/val"), r"disagree"),
    ("missing train data", ("train", "--config", DET, "--task", "detection", "--detection-task", "vehicle_detection",
                            "--train-data", "data/nope", "--val-data", "data/det/val", "--data-yaml", VEHICLE_YAML),
     r"train data data/nope does not exist"),
    ("data yaml other names", ("train", "--config", DET, "--task", "detection", "--detection-task",
                               "pedestrian_detection", "--train-data", "data/det/train", "--val-data", "data/det/val",
                               "--data-yaml", VEHICLE_YAML), r"differ from detection.tasks.pedestrian_detection"),
    ("weights missing", det_override("detection.model.weights=missing.pt"), r"is not a local file"),
    ("weights garbage", det_override("detection.model.weights=junk.pth"), r"cannot be read"),
    ("workers on cpu", det_override("detection.training.workers=2"), r"workers=2 has no effect on CPU"),
    ("seg weights garbage", seg_override("segmentation.model.weights=junk.pth"), r"cannot load model weights"),
    ("seg masks missing", ("train", "--config", SEG, "--task", "segmentation", "--subtask",
                           "road_scene_segmentation", "--train-data", "data/det/train", "--val-data", "data/seg/val"),
     r"has no masks/ folder"),
    ("seg subtask required", ("train", "--config", SEG, "--task", "segmentation", "--train-data", "data/seg/train",
                              "--val-data", "data/seg/val"),
     r"--subtask \(or --segmentation-task\) is required; choose one of road_scene_segmentation, cityscapes"),
    # ---- evaluate and checkpoints
    ("eval missing ckpt", ("evaluate", "--config", DET, "--task", "detection", "--detection-task",
                           "vehicle_detection", "--test-data", "data/det/test", "--checkpoint", "nope.pth"),
     r"checkpoint not found"),
    ("eval garbage ckpt", ("evaluate", "--config", DET, "--task", "detection", "--detection-task",
                           "vehicle_detection", "--test-data", "data/det/test", "--checkpoint", "junk.pth"),
     r"cannot read checkpoint"),
    ("eval seg legacy flag", ("evaluate", "--config", SEG, "--task", "segmentation", "--subtask",
                              "road_scene_segmentation", "--test-data", "data/seg/test",
                              "--checkpoint", "pickled.pt", "--allow-legacy-checkpoint"),
     r"--allow-legacy-checkpoint is not supported for --task segmentation"),
    ("eval pickled ckpt", ("evaluate", "--config", DET, "--task", "detection", "--detection-task",
                           "vehicle_detection", "--test-data", "data/det/test", "--checkpoint", "pickled.pt"),
     r"needs unpickling of Python code"),
    ("eval damaged spec", ("evaluate", "--config", DET, "--task", "detection", "--detection-task",
                           "vehicle_detection", "--test-data", "data/det/test", "--checkpoint", "damaged.pth"),
     r"model_spec"),
    ("resume missing run", det_train("--resume", "no_such_run"), r"unknown run 'no_such_run'|not supported"),
    # ---- registry and other commands
    ("registry best unknown metric mode", ("registry", "best", "--task", "vehicle_detection", "--metric",
                                           "best_val_metric", "--mode", "sideways"),
     r"argument --mode: invalid choice: 'sideways'.*--help"),
    ("train missing argument", ("train", "--config", DET, "--task", "detection"),
     r"the following arguments are required: --train-data, --val-data"),
    ("unknown command", ("trian",), r"invalid choice: 'trian'"),
    ("registry remove empty", ("registry", "remove", ""), r"run_id|empty"),
    ("registry export to dir", ("registry", "export", "--csv", "data"), r"directory|folder"),
    ("registry export missing dir", ("registry", "export", "--csv", "no_dir/x.csv"), r"does not exist"),
    ("fingerprint missing", ("data", "fingerprint", "data/nope"), r"dataset path not found"),
    ("make-dataset not empty", ("make-dataset", "--task", "vehicle_detection", "--out", "data", "--train", "2",
                                "--val", "1", "--test", "0"), r"not empty|exists"),
    ("diff unknown run", ("diff", "a_run", "b_run"), r"unknown run"),
    ("reproduce unknown run", ("reproduce", "nope_run"), r"unknown run"),
    # ---- places a finished run would write to, checked before training starts
    ("registry under a file", ("env", {"STREET_SCENE_REGISTRY": "junk.pth/model_registry.json"}, seg_train()),
     r"registry .*junk.pth/model_registry.json: Not a directory"),
    ("registry is a folder", ("env", {"STREET_SCENE_REGISTRY": "data"}, seg_train()),
     r"registry .*/data: Is a directory"),
    ("outputs under a file", ("env", {"STREET_SCENE_OUTPUT_DIR": "junk.pth/outputs"}, seg_train()),
     r"cannot create the output directory .*junk.pth is a file, not a directory"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Data for both tasks, a registry with one entry, and the checkpoint/weights files the cases refer to."""
    import torch

    from src.common.checkpoint import build_checkpoint
    from src.common.model_registry import ModelRegistry
    from src.data.synthetic import make_detection_dataset, make_segmentation_dataset

    ws = tmp_path_factory.mktemp("bad_input")
    make_detection_dataset("vehicle_detection", ws / "data" / "det", 4, 2, 2, 0, image_size=64)
    make_segmentation_dataset(ws / "data" / "seg", 4, 2, 2, 0, image_size=(64, 32))
    (ws / "junk.pth").write_bytes(b"definitely not a torch file")
    torch.save({"model": torch.nn.Linear(2, 2)}, ws / "pickled.pt")  # pickles a class: needs code to load
    damaged = build_checkpoint(task="detection", subtask="vehicle_detection", model_state={"w": torch.zeros(1)},
                               model_spec={"names": ["car"]}, epoch=1, metrics={}, config={}, config_hash="0" * 8,
                               metadata={})
    damaged["model_spec"] = "oops"
    torch.save(damaged, ws / "damaged.pth")
    registry = ModelRegistry(ws / "registry" / "model_registry.json")
    registry.register({"run_id": "20240101_000000_kept", "task": "vehicle_detection", "config_hash": "abcd1234",
                       "checkpoint_path": str(ws / "junk.pth"), "metrics": {"best_val_metric": 0.5},
                       "timestamp": "2024-01-01T00:00:00", "metadata": {}})
    (ws / "configs").mkdir()
    return ws


def _command(ws: Path, case_id: str, command):
    if command[0] == "file":
        _, name, old, new = command
        text = (REPO_ROOT / "configs" / name).read_text()
        assert old in text, (case_id, old)
        path = ws / "configs" / f"{case_id.replace(' ', '_')}.yaml"
        path.write_text(text.replace(old, new, 1))
        return (det_train if name.startswith("detection") else seg_train)(config=path)
    if command[0] == "raw":
        path = ws / "configs" / f"{case_id.replace(' ', '_')}.yaml"
        path.write_text(command[1])
        return det_train(config=path)
    return command


@pytest.fixture(scope="module")
def results(workspace):
    registry = workspace / "registry" / "model_registry.json"
    before = registry.read_bytes()

    def run(case):
        case_id, command, _ = case
        env = workspace_env(workspace)
        if command[0] == "env":
            env.update({k: str(workspace / v) for k, v in command[1].items()})
            command = command[2]
        argv = _command(workspace, case_id, command)
        if argv[0] in ("train", "evaluate"):
            return case_id, run_script(f"{argv[0]}.py", *argv[1:], cwd=workspace, env=env, timeout=300)
        return case_id, run_cli(*argv, cwd=workspace, env=env, timeout=300)

    with ThreadPoolExecutor(max_workers=3) as pool:
        done = dict(pool.map(run, CASES))
    return {"procs": done, "registry_before": before, "registry": registry, "ws": workspace}


def test_the_matrix_is_large_enough():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
    config_cases = [c for c in CASES if c[1][0] in ("file", "raw") or "--config-override" in c[1]]
    assert len(config_cases) >= 30


@pytest.mark.slow
@pytest.mark.parametrize("case_id, command, pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(results, case_id, command, pattern):
    import re

    proc = results["procs"][case_id]
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1500:], proc.stderr[-1500:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error: ")
    assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert "Traceback" not in proc.stdout + proc.stderr
    outputs = results["ws"] / "outputs"
    assert not outputs.exists() or list(outputs.iterdir()) == []
    assert results["registry"].read_bytes() == results["registry_before"]
    assert not list(results["ws"].glob("**/*.tmp")) and not list(results["ws"].glob("**/.*.tmp"))
