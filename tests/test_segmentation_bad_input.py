"""Bad segmentation input through scripts/train.py and scripts/evaluate.py: exit 2, one `error:` line,
no run directory, nothing registered."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import run_script
from segmentation_e2e_support import (env_for, error_lines, eval_args, make_workspace, registry_entries, run_dirs,
                                      train_args)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("seg_bad") / "ws")


def broken_copy(ws: Path, split: str, dest: Path, case: str) -> Path:
    """A copy of data/<split> with one mask made bad in the way `case` names."""
    shutil.copytree(ws / "data" / split, dest)
    mask_path = sorted((dest / "masks").iterdir())[1]
    mask = Image.open(mask_path)
    mask.load()
    if case == "count":
        mask_path.unlink()
        return dest
    if case == "size":
        mask = mask.resize((mask.width - 8, mask.height), Image.NEAREST)
    elif case == "value":
        values = np.asarray(mask).copy()
        values[0, 0] = 8  # one past the last class id (8 classes) and not the ignore index
        mask = Image.fromarray(values)
    elif case == "rgb":
        mask = mask.convert("RGB")
    mask.save(mask_path)
    return dest


def craft_detection_checkpoint(path: Path) -> Path:
    """A valid checkpoint of the shared format, as a detection run writes it (tiny fake weights)."""
    import torch

    from src.common.checkpoint import build_checkpoint, save_checkpoint

    ckpt = build_checkpoint(task="detection", subtask="vehicle_detection", model_state={"w": torch.zeros(3)},
                            model_spec={"architecture": "yolov8n.yaml", "names": ["car"]}, epoch=1,
                            metrics={"val/mAP50-95": 0.1}, config={"seed": 42}, config_hash="0123abcd",
                            metadata={"run_id": "20240101_000000_det"})
    path.parent.mkdir(parents=True, exist_ok=True)  # atomic writes never create folders
    return save_checkpoint(path, ckpt)


TRAIN_CASES = {  # case -> (broken split role, expected words in the error line)
    "count": ("train", "do not pair up by name"),
    "size": ("train", "masks must match their image's size"),
    "value": ("val", "value(s) 8 outside the class ids 0..7"),
    "rgb": ("val", "has mode RGB"),
}


def assert_refused(proc, expected: str, root: Path) -> None:
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc.stderr)
    assert expected in line, line
    assert "Traceback" not in proc.stderr
    assert run_dirs(root) == [] and registry_entries(root) == []


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_refuses_bad_masks(ws, tmp_path, case):
    role, expected = TRAIN_CASES[case]
    bad = broken_copy(ws, role, tmp_path / "bad", case)
    splits = {"train": ws / "data/train", "val": ws / "data/val", role: bad}
    proc = run_script("train.py", *train_args("bad", train=splits["train"], val=splits["val"]), cwd=ws,
                      env=env_for(tmp_path))
    assert_refused(proc, expected, tmp_path)


def test_train_refuses_unknown_segmentation_task(ws, tmp_path):
    args = train_args("bad")
    args[args.index("--segmentation-task") + 1] = "lane_detection"
    proc = run_script("train.py", *args, cwd=ws, env=env_for(tmp_path))
    assert_refused(proc,
                   "unknown subtask 'lane_detection' for --task segmentation; choose one of road_scene_segmentation",
                   tmp_path)


def test_evaluate_refuses_a_detection_checkpoint(ws, tmp_path):
    ckpt = craft_detection_checkpoint(tmp_path / "det_run" / "best_model.pth")
    proc = run_script("evaluate.py", *eval_args(ckpt, "data/test", "--verify-config"), cwd=ws,
                      env=env_for(tmp_path))
    assert_refused(proc, "is a detection model, but --task is segmentation", tmp_path)
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["best_model.pth"]  # no evaluations/ written
