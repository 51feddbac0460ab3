"""`torchrun --nproc_per_node=2 scripts/train.py --task segmentation ...` on CPU (gloo): one run
directory, one registry entry, one set of files, written by rank 0 only."""

import subprocess
import sys

import pytest
import torch

from helpers import REPO_ROOT, subprocess_env
from segmentation_e2e_support import OVERRIDES, env_for, make_workspace, registry_entries, run_dirs, train_args
from src.common.yaml_io import load_yaml

pytestmark = pytest.mark.slow

ONE_EPOCH = tuple(o for o in OVERRIDES if not o.startswith("segmentation.training.epochs")) + (
    "segmentation.training.epochs=1",)
EXPECTED_FILES = {"config.yaml", "overrides.yaml", "metadata.yaml", "environment.txt", "train.log", "metrics.csv",
                  "training_curves.png", "best_model.pth", "checkpoint_epoch_1.pth"}


def test_torchrun_two_cpu_processes_make_one_run(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(REPO_ROOT / "scripts" / "train.py"), *map(str, train_args("seg_ddp", overrides=ONE_EPOCH))]
    proc = subprocess.run(argv, cwd=ws, env=subprocess_env(env_for(ws)), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    [run_dir] = run_dirs(ws)
    done = [line for line in proc.stdout.splitlines() if line.startswith("Training completed.")]
    assert done == [f"Training completed. Results saved to outputs/{run_dir.name}"]
    assert [line for line in proc.stdout.splitlines() if line.startswith("Run ID:")] == [f"Run ID: {run_dir.name}"]
    assert [e["run_id"] for e in registry_entries(ws)] == [run_dir.name]
    # Only rank 0 writes: the expected files (git.diff when the tree is dirty), no leftovers of a second writer.
    assert EXPECTED_FILES <= {p.name for p in run_dir.iterdir()} <= EXPECTED_FILES | {"git.diff", ".lock"}
    meta = load_yaml(run_dir / "metadata.yaml")
    assert (meta["status"], meta["world_size"], meta["run_id"]) == ("completed", 2, run_dir.name)
    assert "resumes" not in meta
    log = (run_dir / "train.log").read_text()
    assert log.count("epoch 1/1:") == 1  # printed by rank 0 only
    ckpt = torch.load(run_dir / "checkpoint_epoch_1.pth", map_location="cpu", weights_only=True)
    assert ckpt["train_state"]["data_position"]["world_size"] == 2
    assert len(ckpt["train_state"]["rng"]) == 2  # every process's RNG state, for resuming
