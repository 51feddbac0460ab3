"""Synthetic street scenes: determinism, exact boxes, mask contents, safe writing, and the make-dataset command."""

import argparse
import copy
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageChops, ImageDraw

from src.cli import dataset_cmd
from src.common.errors import UserError
from src.common.yaml_io import load_yaml
from src.common.report import shown
from src.data import scene, shapes, synthetic
from src.data.data_yaml import class_names as class_names_of
from src.data.detection_data import resolve_split, validate_split
from src.data.segmentation_data import load_segmentation_yaml, resolve_segmentation_split, validate_segmentation_split

REPO = Path(__file__).resolve().parents[1]


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def read_boxes(label: Path) -> list[list[float]]:
    return [list(map(float, line.split())) for line in label.read_text().splitlines()]


@pytest.fixture(scope="module")
def vehicles(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "vehicles"
    summary = synthetic.make_detection_dataset("vehicle_detection", out, 40, 6, 4, seed=3, image_size=128)
    return out, summary


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    make = synthetic.make_detection_dataset
    make("traffic_sign_detection", tmp_path / "a", 5, 2, 2, seed=7, image_size=96)
    make("traffic_sign_detection", tmp_path / "b", 5, 2, 2, seed=7, image_size=96)
    make("traffic_sign_detection", tmp_path / "c", 5, 2, 2, seed=8, image_size=96)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")
    synthetic.make_segmentation_dataset(tmp_path / "s1", 3, 1, 1, seed=7, image_size=(96, 48))
    synthetic.make_segmentation_dataset(tmp_path / "s2", 3, 1, 1, seed=7, image_size=(96, 48))
    synthetic.make_segmentation_dataset(tmp_path / "s3", 3, 1, 1, seed=9, image_size=(96, 48))
    assert tree_digest(tmp_path / "s1") == tree_digest(tmp_path / "s2")
    assert tree_digest(tmp_path / "s1") != tree_digest(tmp_path / "s3")


def test_an_image_does_not_depend_on_how_many_others_are_drawn(tmp_path):
    synthetic.make_detection_dataset("pedestrian_detection", tmp_path / "small", 2, 1, 0, seed=1, image_size=96)
    synthetic.make_detection_dataset("pedestrian_detection", tmp_path / "big", 6, 3, 0, seed=1, image_size=96)
    for rel in ("train/images/train_00001.jpg", "train/labels/train_00001.txt", "val/images/val_00000.jpg"):
        assert (tmp_path / "small" / rel).read_bytes() == (tmp_path / "big" / rel).read_bytes()


def test_layout_labels_and_class_coverage(vehicles):
    out, summary = vehicles
    names = class_names_of(REPO / "configs/datasets/vehicle_detection.yaml")
    assert names == summary["names"] == ["car", "truck", "bus", "motorcycle", "bicycle"]
    for split, n in (("train", 40), ("val", 6), ("test", 4)):
        assert sorted(p.stem for p in (out / split / "images").glob("*.jpg")) == \
            sorted(p.stem for p in (out / split / "labels").glob("*.txt"))
        assert len(list((out / split / "images").iterdir())) == n
    train = summary["splits"]["train"]
    assert all(count > 0 for count in train["objects"].values()), train
    assert train["background_images"] > 0
    all_boxes = [b for lb in (out / "train" / "labels").glob("*.txt") for b in read_boxes(lb)]
    assert len(all_boxes) == sum(train["objects"].values())
    for cls, xc, yc, w, h in all_boxes:
        assert cls in range(5)
        eps = 1e-6  # labels carry 6 decimals
        assert -eps <= xc - w / 2 and xc + w / 2 <= 1 + eps and -eps <= yc - h / 2 and yc + h / 2 <= 1 + eps
        assert h >= 0.08 and w >= 0.05  # not tiny (width may be clipped a little at the image edge)
    assert load_yaml(out / "dataset_info.yaml") == summary
    assert validate_split(resolve_split(str(out / "train"), "train"), names)["images"] == 40


@pytest.mark.parametrize("task", ["vehicle_detection", "pedestrian_detection"])
def test_boxes_are_exactly_the_drawn_objects(task):
    # Redraw the background alone from a copy of the same random stream: what differs is exactly the objects.
    size = 160
    for index in range(12):
        rng = synthetic._image_rng(0, task, "train", index)
        background_rng = copy.deepcopy(rng)
        image, boxes = synthetic.draw_detection_image(rng, task, size)
        background = Image.new("RGB", (size, size))
        pieces, _ = scene.street_background(background_rng, size, size, trees=True)
        shapes.render(ImageDraw.Draw(background), [p for _, p in pieces])
        diff = np.asarray(ImageChops.difference(image, background)).any(axis=2)
        covered = np.zeros_like(diff)
        for _cls, x0, y0, x1, y1 in boxes:
            inside = diff[y0:y1, x0:x1]
            # Each box edge touches an object pixel: the box is tight.
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            assert not covered[y0:y1, x0:x1].any(), "boxes overlap: an object could be occluded"
            covered[y0:y1, x0:x1] = True
        assert not (diff & ~covered).any(), "pixels drawn outside every box: an unlabelled object"


def test_segmentation_masks(tmp_path):
    summary = synthetic.make_segmentation_dataset(tmp_path / "seg", 12, 2, 0, seed=5, image_size=(128, 64))
    assert not (tmp_path / "seg" / "test").exists()
    names, ignore = load_segmentation_yaml(REPO / "configs/datasets/road_scene_segmentation.yaml")
    assert names == list(synthetic.SEGMENTATION_CLASSES) and ignore == 255
    seen = set()
    for mask_path in sorted((tmp_path / "seg" / "train" / "masks").glob("*.png")):
        with Image.open(mask_path) as mask:
            assert mask.mode == "L" and mask.size == (128, 64)
            seen |= set(np.unique(np.asarray(mask)).tolist())
        with Image.open(tmp_path / "seg" / "train" / "images" / mask_path.name) as image:
            assert image.mode == "RGB" and image.size == (128, 64)
    assert seen == set(range(8)) | {255}
    assert summary["splits"]["train"]["ignored_pixels"] > 0
    split = resolve_segmentation_split(tmp_path / "seg" / "train", "train")
    assert validate_segmentation_split(split, len(names), ignore)["images"] == 12


def test_refuses_a_non_empty_folder_and_fills_an_empty_one(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    with pytest.raises(UserError, match="not empty"):
        synthetic.make_detection_dataset("vehicle_detection", out, 2, 1, 1, seed=0, image_size=64)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    synthetic.make_detection_dataset("vehicle_detection", empty, 2, 1, 1, seed=0, image_size=64)
    assert len(list((empty / "train" / "images").iterdir())) == 2
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        synthetic.make_segmentation_dataset(tmp_path / "file", 2, 1, 1, seed=0)


def test_a_crash_leaves_no_half_dataset(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "_write_detection_split", boom)
    with pytest.raises(RuntimeError):
        synthetic.make_detection_dataset("vehicle_detection", tmp_path / "out", 2, 1, 1, seed=0, image_size=64)
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_build_folder_names_its_owner(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(synthetic, "_write_detection_split", lambda root, *a: seen.append(root) or {})
    synthetic.make_detection_dataset("vehicle_detection", tmp_path / "out", 2, 1, 1, seed=0, image_size=64)
    match = synthetic._PARTIAL.fullmatch(seen[0].name)
    assert seen[0].parent == tmp_path and match
    assert (match["name"], int(match["pid"]), match["host"]) == ("out", os.getpid(), synthetic._host())


def test_stale_build_folders_of_dead_processes_are_removed_live_ones_kept(tmp_path, capsys):
    host, dead = synthetic._host(), _dead_pid()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "precious.txt").write_text("user data")
    folders = {
        "dead": tmp_path / f".veh.partial-{dead}@{host}-deadbeef",
        "live (this process)": tmp_path / f".seg.partial-{os.getpid()}@{host}-0badf00d",
        "other host": tmp_path / f".veh.partial-{dead}@not-{host}-12345678",
        "old name without pid": tmp_path / ".veh.partial-1a2b3c4d",
        "not ours": tmp_path / ".veh.partial-mine",
    }
    for folder in folders.values():
        (folder / "train" / "images").mkdir(parents=True)
        (folder / "train" / "images" / "a.jpg").write_bytes(b"x" * 1000)
    link = tmp_path / f".lnk.partial-{dead}@{host}-aaaaaaaa"
    link.symlink_to(outside)

    with shown():  # as `street-scene make-dataset` shows the library's notes
        synthetic.make_detection_dataset("vehicle_detection", tmp_path / "new", 2, 1, 0, seed=0, image_size=64)
    assert not folders["dead"].exists()
    assert all(folder.is_dir() for kind, folder in folders.items() if kind != "dead")
    assert link.is_symlink() and (outside / "precious.txt").read_text() == "user data"
    assert (tmp_path / "new" / "dataset_info.yaml").is_file()
    err = capsys.readouterr().err
    assert err.splitlines() == [f"note: removed {folders['dead']}, a partial dataset left by make-dataset process "
                                f"{dead}, which is no longer running"]


def test_process_alive_checks():
    assert synthetic._process_alive(os.getpid())
    assert not synthetic._process_alive(_dead_pid())
    assert synthetic._process_alive(0) and synthetic._process_alive(9_999_999_999)  # doubt counts as alive


@pytest.mark.slow
def test_a_killed_make_dataset_is_cleaned_up_by_the_next_one(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import REPO_ROOT, run_cli, subprocess_env

    argv = [sys.executable, "-m", "src.cli.main", "make-dataset", "--task", "vehicle_detection",
            "--out", str(tmp_path / "big"), "--train", "5000", "--val", "1", "--test", "0", "--image-size", "64"]
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    partial = []
    while not any(p.is_file() for d in partial for p in (d / "train" / "images").glob("*.jpg")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        partial = list(tmp_path.glob(".big.partial-*"))
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup code runs
    proc.communicate(timeout=30)
    [left] = partial
    assert left.is_dir() and not (tmp_path / "big").exists()

    done = run_cli("make-dataset", "--task", "vehicle_detection", "--out", tmp_path / "small", "--train", "2",
                   "--val", "1", "--test", "0", "--image-size", "64", timeout=120)
    assert done.returncode == 0, done.stderr
    assert not left.exists()
    assert f"note: removed {left}" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small"]


@pytest.mark.parametrize("kwargs, match", [
    ({"n_train": 0}, "train images"), ({"n_val": -1}, "val images"), ({"seed": -3}, "seed"),
    ({"image_size": 32}, "image size"), ({"task": "boat_detection"}, "unknown detection task"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    args = {"task": "vehicle_detection", "out_dir": tmp_path / "o", "n_train": 2, "n_val": 1, "n_test": 1,
            "seed": 0, "image_size": 64, **kwargs}
    with pytest.raises(UserError, match=match):
        synthetic.make_detection_dataset(**args)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("size", [256, (32, 32), (128, 64, 3), ("256", 128)])
def test_bad_segmentation_image_size(tmp_path, size):
    with pytest.raises(UserError, match="width 64-4096"):
        synthetic.make_segmentation_dataset(tmp_path / "o", 2, 1, 1, seed=0, image_size=size)
    assert not (tmp_path / "o").exists()


def _cli(argv):
    parser = argparse.ArgumentParser()
    dataset_cmd.add_arguments(parser)
    return dataset_cmd.run(parser.parse_args(argv))


def test_make_dataset_command(tmp_path, capsys):
    out = tmp_path / "signs"
    assert _cli(["--task", "traffic_sign_detection", "--out", str(out), "--train", "3", "--val", "1", "--test", "1",
                 "--seed", "4", "--image-size", "96"]) == 0
    printed = capsys.readouterr().out
    assert f"Wrote 5 synthetic traffic_sign_detection images to {out}" in printed
    assert "--data-yaml configs/datasets/traffic_sign_detection.yaml" in printed
    with Image.open(out / "train" / "images" / "train_00000.jpg") as image:
        assert image.size == (96, 96)
    assert _cli(["--task", "road_scene_segmentation", "--out", str(tmp_path / "seg"), "--train", "2", "--val", "1",
                 "--test", "0", "--image-size", "128"]) == 0
    with Image.open(tmp_path / "seg" / "train" / "masks" / "train_00000.png") as mask:
        assert mask.size == (128, 64)
    with pytest.raises(UserError, match="not empty"):
        _cli(["--task", "vehicle_detection", "--out", str(out)])


@pytest.mark.slow
def test_make_dataset_through_street_scene_command(tmp_path):
    from tests.helpers import run_cli

    ok = run_cli("make-dataset", "--task", "vehicle_detection", "--out", tmp_path / "v", "--train", "2", "--val", "1",
                 "--test", "1", "--image-size", "64")
    assert ok.returncode == 0, ok.stderr
    assert "Wrote 4 synthetic vehicle_detection images" in ok.stdout
    again = run_cli("make-dataset", "--task", "vehicle_detection", "--out", tmp_path / "v")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [f"error: output folder {tmp_path / 'v'} is not empty; refusing to "
                                                 "overwrite it, choose a new or empty folder"]


def test_make_dataset_module_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys; import src.cli.dataset_cmd; "
            "print([m for m in ('numpy', 'PIL', 'torch', 'ultralytics') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_make_dataset_draws_a_subtask_defined_in_a_config(tmp_path):
    from tests.helpers import run_cli

    config = tmp_path / "c.yaml"
    config.write_text("detection:\n  tasks:\n    signs_and_cars: {classes: [stop, car]}\n    trams: {classes: [tram]}\n")
    proc = run_cli("make-dataset", "--config", config, "--task", "signs_and_cars", "--out", tmp_path / "d",
                   "--train", "3", "--val", "1", "--test", "0", "--image-size", "64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    labels = [line.split()[0] for f in (tmp_path / "d" / "train" / "labels").glob("*.txt")
              for line in f.read_text().splitlines()]
    assert labels and set(labels) <= {"0", "1"}  # class ids of [stop, car]
    refused = run_cli("make-dataset", "--config", config, "--task", "trams", "--out", tmp_path / "t", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.startswith("error: no synthetic drawing for class 'tram'")
    assert not (tmp_path / "t").exists()
