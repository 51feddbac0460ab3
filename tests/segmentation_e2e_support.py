"""Shared set-up for the segmentation end-to-end tests: a tiny workspace laid out as the README assumes.

A workspace is a folder used as the cwd of every script call, holding `configs/` (a copy of the repo's, so the
issue's commands run verbatim), `data/{train,val,test}` (synthetic road scenes), and the output root, registry
and cache that STREET_SCENE_* point at.
"""

import json
import shutil
from pathlib import Path

from helpers import REPO_ROOT

CONFIG = "configs/segmentation_config.yaml"
DATA_YAML = "configs/datasets/road_scene_segmentation.yaml"
SUBTASK = "road_scene_segmentation"
# Tiny and CPU-only: 8 train / 4 val / 4 test images of 128x64, 64x64 crops, batch 4.
OVERRIDES = ("segmentation.training.epochs=2", "segmentation.training.batch_size=4",
             "segmentation.training.crop_size=[64,64]", "device=cpu")
SEED = 42


def make_workspace(root: Path) -> Path:
    from src.data.synthetic import make_segmentation_dataset

    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO_ROOT / "configs", root / "configs")
    make_segmentation_dataset(root / "data", 8, 4, 4, seed=0, image_size=(128, 64))
    return root


def env_for(root: Path) -> dict:
    """STREET_SCENE_* under `root`; STREET_SCENE_SEED emptied so a caller's environment cannot change seeds."""
    return {"STREET_SCENE_OUTPUT_DIR": str(root / "outputs"),
            "STREET_SCENE_REGISTRY": str(root / "registry" / "model_registry.json"),
            "STREET_SCENE_CACHE": str(root / "cache"), "STREET_SCENE_SEED": ""}


def overrides_args(overrides=OVERRIDES) -> list:
    return [arg for item in overrides for arg in ("--config-override", item)]


def train_args(run_name: str, *extra, config: str = CONFIG, overrides=OVERRIDES, seed=SEED,
               train="data/train", val="data/val") -> list:
    """The issue's train command: --config ... --task segmentation ... --run-name NAME [--config-override] [--seed]."""
    args = ["--config", config, "--task", "segmentation", "--segmentation-task", SUBTASK, "--train-data", train,
            "--val-data", val, "--data-yaml", DATA_YAML, "--run-name", run_name, *overrides_args(overrides)]
    if seed is not None:
        args += ["--seed", seed]
    return args + list(extra)


def eval_args(checkpoint, test="data/test", *extra, config: str = CONFIG, overrides=OVERRIDES) -> list:
    return ["--config", config, "--task", "segmentation", "--segmentation-task", SUBTASK, "--test-data", test,
            "--checkpoint", checkpoint, "--data-yaml", DATA_YAML, *overrides_args(overrides), *extra]


def registry_entries(root: Path) -> list:
    path = root / "registry" / "model_registry.json"
    return json.loads(path.read_text()) if path.is_file() else []


def run_dirs(root: Path) -> list:
    outputs = root / "outputs"
    return sorted(p for p in outputs.iterdir() if p.is_dir()) if outputs.is_dir() else []


def run_id_from(stdout: str) -> str:
    """The run id of the two closing lines the README shows (asserting their exact form)."""
    lines = stdout.strip().splitlines()
    run_id = lines[-1].removeprefix("Run ID: ")
    assert lines[-1] == f"Run ID: {run_id}", stdout
    assert lines[-2] == f"Training completed. Results saved to outputs/{run_id}", stdout
    return run_id


def weights_sha(path: Path) -> str:
    import torch

    from src.common.checkpoint import state_dict_sha256

    return state_dict_sha256(torch.load(path, map_location="cpu", weights_only=True)["model_state"])


def error_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if line.startswith("error:")]
