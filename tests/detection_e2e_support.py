"""Shared bits of the detection end-to-end tests: paths, tiny-run overrides, workspace env, output parsing.

A "workspace" is a tmp folder used as the user's cwd: `outputs/`, `registry/` and the ultralytics cache all live
under it (through the STREET_SCENE_* variables), so nothing a test runs can write into the checkout.
"""

import re
import shutil
from pathlib import Path

from tests.helpers import REPO_ROOT

CONFIG = REPO_ROOT / "configs" / "detection_config.yaml"
DATASETS = REPO_ROOT / "configs" / "datasets"
VEHICLE_YAML = DATASETS / "vehicle_detection.yaml"
VEHICLE_CLASSES = ["car", "truck", "bus", "motorcycle", "bicycle"]
# Tiny but real training: 64 px, 1-2 epochs, batch 4 (set per run), without ultralytics' own plots (seconds each).
IMGSZ_64 = "detection.training.image_size=64"
NO_PLOTS = ["detection.training.plots=false", "detection.evaluation.plots=false"]
TRAIN_SECTION = ("--task", "detection", "--detection-task", "vehicle_detection")
RUN_ID_RE = re.compile(r"^(\d{8}_\d{6})_(.+)$")
RUN_DIR_FILES = {"config.yaml", "metadata.yaml", "best_model.pth", "metrics.csv", "training_curves.png", "train.log",
                 "overrides.yaml", "environment.txt", "data.yaml"}


def workspace_env(ws: Path, **extra) -> dict:
    """STREET_SCENE_* under `ws`; STREET_SCENE_SEED emptied (it counts as unset) unless given."""
    env = {"STREET_SCENE_OUTPUT_DIR": str(ws / "outputs"),
           "STREET_SCENE_REGISTRY": str(ws / "registry" / "model_registry.json"),
           "STREET_SCENE_CACHE": str(ws / "cache"), "STREET_SCENE_SEED": ""}
    env.update(extra)
    return env


def make_data(root: Path, n_train: int, n_val: int, n_test: int, seed: int = 0) -> Path:
    """Synthetic vehicle scenes at 64 px: root/{train,val,test}/{images,labels}."""
    from src.data.synthetic import make_detection_dataset

    make_detection_dataset("vehicle_detection", root, n_train, n_val, n_test, seed, image_size=64)
    return root


def ultralytics_layout(data: Path, out: Path) -> Path:
    """Copy data/<split>/{images,labels} into the ultralytics spelling out/{images,labels}/<split>."""
    for split in ("train", "val", "test"):
        for kind in ("images", "labels"):
            if (data / split / kind).is_dir():
                shutil.copytree(data / split / kind, out / kind / split)
    return out


def image_list(images: Path, txt: Path) -> Path:
    """A .txt list of the images, paths relative to the .txt file's folder (the documented rule)."""
    import os

    lines = [os.path.relpath(p, txt.parent) for p in sorted(images.glob("*.jpg"))]
    txt.parent.mkdir(parents=True, exist_ok=True)
    txt.write_text("\n".join(lines) + "\n")
    return txt


def completion_lines(stdout: str):
    """The last two stdout lines, which the README shows as the training output; (saved_to, run_id)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) >= 2, stdout
    done, rid = lines[-2], lines[-1]
    m1 = re.fullmatch(r"Training completed\. Results saved to (\S+)", done)
    m2 = re.fullmatch(r"Run ID: (\S+)", rid)
    assert m1 and m2, (done, rid)
    return m1.group(1), m2.group(1)


def load_yaml(path: Path):
    import yaml

    return yaml.safe_load(Path(path).read_text())


def registry_entries(ws: Path) -> list:
    import json

    path = ws / "registry" / "model_registry.json"
    return json.loads(path.read_text()) if path.is_file() else []


def weights_sha(checkpoint: Path) -> str:
    """sha256 over the checkpoint's model_state tensors (what 'identical weights' means)."""
    import torch

    from src.common.checkpoint import state_dict_sha256

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return state_dict_sha256(ckpt["model_state"])


def assert_user_error(proc, pattern: str) -> str:
    """Exit 2, exactly one `error: ...` line on stderr matching `pattern`, no traceback anywhere."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]
