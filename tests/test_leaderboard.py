"""`street-scene leaderboard` and `report` end to end on two real (tiny) segmentation runs.

The runs are trained once for the module (1 epoch, 64 px crops, 8 images); every call below is the command
exactly as the README shows it, in a subprocess, with the workspace as cwd.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT
from tests.segmentation_e2e_support import CONFIG, DATA_YAML, SUBTASK, env_for, make_workspace
from tests.test_report_browser import assert_page_ok, needs_chromium, render

pytestmark = pytest.mark.slow
OVERRIDES = ("segmentation.training.epochs=1", "segmentation.training.batch_size=4",
             "segmentation.training.crop_size=[64,64]", "device=cpu")
REPORT_PNG_ENV = "STREET_SCENE_REPORT_PNG"  # set to a path to keep the screenshot (docs/report.png)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Workspace with two registered runs that differ in their learning rate."""
    from src.common.seeding import process_settings_restored
    from src.pipelines.pipeline import StreetScenePipeline

    import torch

    root = make_workspace(tmp_path_factory.mktemp("leaderboard"))
    with pytest.MonkeyPatch.context() as mp, process_settings_restored(torch.get_num_threads()):
        for key, value in env_for(root).items():
            mp.setenv(key, value)
        mp.chdir(root)
        for name, lr in (("lr_high", 0.01), ("lr_low", 0.001)):
            StreetScenePipeline(CONFIG, "segmentation", segmentation_task=SUBTASK, seed=42,
                                overrides=[*OVERRIDES, f"segmentation.training.learning_rate={lr}"]
                                ).train("data/train", "data/val", DATA_YAML, run_name=name)
    return root


def street_scene(root: Path, *args):
    env = {**os.environ, **env_for(root), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "src.cli.main", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


def leaderboard(root: Path, *extra):
    done = street_scene(root, "leaderboard", "--subtask", SUBTASK, "--test-data", "data/test", *extra)
    assert done.returncode == 0, done.stderr
    return done


def registry_path(root: Path) -> Path:
    return root / "registry" / "model_registry.json"


def subset_registry(root: Path, run_ids, name: str) -> Path:
    entries = [e for e in json.loads(registry_path(root).read_text()) if e["run_id"] in run_ids]
    path = root / "registry" / name
    path.write_text(json.dumps(entries))
    return path


def test_leaderboard_evaluates_only_new_runs_then_answers_from_cache(ws):
    entries = json.loads(registry_path(ws).read_text())
    first, second = (e["run_id"] for e in entries)
    one = subset_registry(ws, [first], "one.json")
    done = leaderboard(ws, "--data-yaml", DATA_YAML, "--json", "--registry", str(one))
    board = json.loads(done.stdout)  # stdout is only JSON
    assert [r["status"] for r in board["rows"]] == ["evaluated"] and "1/1 evaluated" in done.stderr

    done = leaderboard(ws, "--data-yaml", DATA_YAML, "--json")
    board = json.loads(done.stdout)
    status = {r["run_id"]: r["status"] for r in board["rows"]}
    assert status == {first: "cached", second: "evaluated"} and "1/1 evaluated, 0 left" in done.stderr
    assert board["metric"] == "test/mIoU" and board["mode"] == "max"
    values = [r["value"] for r in board["rows"]]
    assert values == sorted(values, reverse=True) and [r["rank"] for r in board["rows"]] == [1, 2]
    assert board["rows"][0]["gap"] == 0 and board["rows"][1]["gap"] == values[1] - values[0]
    assert all(r["verify"] == "ok" and r["same_classes"] is True for r in board["rows"])
    for row in board["rows"]:  # the cache holds the evaluation result itself
        cached = json.loads(Path(row["cache"]).read_text())
        assert cached["result"]["metrics"]["test/mIoU"] == row["value"] and cached["result"]["run_id"] == row["run_id"]

    table = leaderboard(ws, "--data-yaml", DATA_YAML)
    assert "2 runs: 0 evaluated now, 2 from cache" in table.stdout and "evaluated" not in table.stderr
    assert first in table.stdout and second in table.stdout and "TEST/MIOU" in table.stdout


def test_pipeline_helper_reads_the_same_cache(ws, monkeypatch):
    from src.pipelines.pipeline import StreetScenePipeline

    leaderboard(ws, "--data-yaml", DATA_YAML)  # fills the cache when this test runs alone
    for key, value in env_for(ws).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(ws)
    board = StreetScenePipeline(CONFIG, "segmentation", segmentation_task=SUBTASK).leaderboard(
        "data/test", data_yaml=DATA_YAML)
    assert [r["status"] for r in board["rows"]] == ["cached", "cached"]


def test_other_class_names_and_missing_runs_are_marked_not_evaluated(ws):
    other_yaml = ws / "other.yaml"
    other_yaml.write_text("names:\n  0: road\n  1: sky\n")
    before = sorted(ws.glob("outputs/*/evaluations/*"))
    board = json.loads(leaderboard(ws, "--data-yaml", str(other_yaml), "--json").stdout)
    assert {(r["status"], r["same_classes"], r["rank"]) for r in board["rows"]} == {("other classes", False, None)}
    assert sorted(ws.glob("outputs/*/evaluations/*")) == before

    entries = json.loads(registry_path(ws).read_text())
    gone = {**entries[0], "run_id": "20200101_000000_gone", "run_dir": str(ws / "outputs" / "gone"),
            "checkpoint_path": str(ws / "outputs" / "gone" / "best_model.pth")}
    with_gone = ws / "registry" / "with_gone.json"
    with_gone.write_text(json.dumps(entries + [gone]))
    leaderboard(ws, "--data-yaml", DATA_YAML, "--registry", str(with_gone))  # cache filled
    table = leaderboard(ws, "--data-yaml", DATA_YAML, "--registry", str(with_gone)).stdout
    assert "missing: run directory not found" in table and "20200101_000000_gone" in table


@needs_chromium
def test_report_of_real_runs_in_a_browser(ws, tmp_path):
    leaderboard(ws, "--data-yaml", DATA_YAML)  # cached leaderboard results become a report column
    out = ws / "report.html"
    done = street_scene(ws, "report", "--out", str(out), "--force")
    assert done.returncode == 0, done.stderr
    run_ids = [e["run_id"] for e in json.loads(registry_path(ws).read_text())]
    page = out.read_text()
    assert "test/mIoU @ test" in page
    shot = tmp_path / "report.png"
    dom, console = render(out, tmp_path, "#all", screenshot=shot, size=(1200, 1400))
    assert_page_ok(dom, console, run_ids)
    assert "segmentation.training.learning_rate" in dom  # the config difference to the best run
    assert f"street-scene reproduce {run_ids[1]}" in dom
    if os.environ.get(REPORT_PNG_ENV):
        shutil.copyfile(shot, os.environ[REPORT_PNG_ENV])
