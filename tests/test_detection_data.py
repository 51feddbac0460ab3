"""Detection data: the three split spellings, data-yaml rules, label validation and the effective data yaml."""

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from src.common.errors import UserError
from src.common.yaml_io import load_yaml
from src.data import synthetic
from src.data.data_yaml import class_names as class_names_of
from src.data.detection_data import (label_path, resolve_split, validate_split,
                                     write_effective_data_yaml)

REPO = Path(__file__).resolve().parents[1]
NAMES = ["pedestrian", "cyclist"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "ds"
    synthetic.make_detection_dataset("pedestrian_detection", out, 6, 2, 2, seed=11, image_size=64)
    return out


@pytest.fixture
def forms(dataset, tmp_path):
    """The same train split spelled three ways: (a) folder, (b) images/<split>, (c) .txt lists."""
    ultra = tmp_path / "ultra"
    shutil.copytree(dataset / "train" / "images", ultra / "images" / "train")
    shutil.copytree(dataset / "train" / "labels", ultra / "labels" / "train")
    images = sorted(p.name for p in (ultra / "images" / "train").iterdir())
    (ultra / "relative.txt").write_text("".join(f"images/train/{n}\n" for n in images))
    (ultra / "dotted.txt").write_text("".join(f"./images/train/{n}\n" for n in images))
    (ultra / "absolute.txt").write_text("\n".join(str(ultra / "images" / "train" / n) for n in images) + "\n\n")
    return {"a": str(dataset / "train"), "b": str(ultra / "images" / "train"), "c_rel": str(ultra / "relative.txt"),
            "c_dot": str(ultra / "dotted.txt"), "c_abs": str(ultra / "absolute.txt")}


def _contents(split):
    return sorted((i.name, i.read_bytes(), lb.read_text()) for i, lb in zip(split.images, split.labels))


def test_three_spellings_resolve_to_the_same_images(forms):
    resolved = {k: resolve_split(v, "train") for k, v in forms.items()}
    assert {k: r.kind for k, r in resolved.items()} == {
        "a": "folder", "b": "images_dir", "c_rel": "list", "c_dot": "list", "c_abs": "list"}
    reference = _contents(resolved["a"])
    assert len(reference) == 6
    for split in resolved.values():
        assert _contents(split) == reference
        assert split.source.is_absolute() and all(p.is_absolute() for p in split.images)
        assert validate_split(split, NAMES)["images"] == 6
    assert [r.list_needs_rewrite for r in resolved.values()] == [False, False, True, False, False]


def test_label_rule_matches_ultralytics():
    from ultralytics.data.utils import img2label_paths

    paths = ["/d/images/train/a.jpg", "/d/images/x/images/b.PNG", "/d/train/images/c.d.jpeg"]
    assert [str(label_path(Path(p))) for p in paths] == img2label_paths(paths)
    assert label_path(Path("/d/pictures/a.jpg")) is None


def test_effective_data_yaml_is_what_ultralytics_reads(forms, tmp_path, monkeypatch):
    from ultralytics.data.base import BaseDataset

    run_dir = tmp_path / "run"
    run_dir.mkdir()  # the runner creates the run dir; atomic writes never create folders
    train, val = resolve_split(forms["c_rel"], "train"), resolve_split(forms["a"], "val")
    test = resolve_split(forms["b"], "test")
    out = write_effective_data_yaml(run_dir / "data.yaml", train, val, test, names=NAMES)
    data = load_yaml(out)
    assert data["names"] == {0: "pedestrian", 1: "cyclist"} and data["nc"] == 2
    assert data["val"] == str(val.source) and data["test"] == str(test.source)
    assert data["train"] == str(run_dir / "train_images.txt")  # rewritten: relative entries without ./
    # ultralytics' own reader finds the same images wherever it runs from.
    monkeypatch.chdir(tmp_path)
    reader = SimpleNamespace(prefix="", fraction=1.0)
    for key, split in (("train", train), ("val", val), ("test", test)):
        assert BaseDataset.get_img_files(reader, data[key]) == [str(p) for p in split.images]
    dotted = resolve_split(forms["c_dot"], "train")
    data = load_yaml(write_effective_data_yaml(run_dir / "data2.yaml", dotted, val, names=NAMES))
    assert data["train"] == forms["c_dot"] and "test" not in data
    assert BaseDataset.get_img_files(reader, data["train"]) == [str(p) for p in dotted.images]


def test_bundled_data_yamls():
    expected = {"vehicle_detection": ["car", "truck", "bus", "motorcycle", "bicycle"],
                "pedestrian_detection": ["pedestrian", "cyclist"],
                "traffic_sign_detection": ["stop", "yield", "speed_limit", "no_entry", "pedestrian_crossing"]}
    for task, names in expected.items():
        assert class_names_of(REPO / f"configs/datasets/{task}.yaml") == names
        assert synthetic.detection_class_names(task) == names


@pytest.mark.parametrize("text, match", [
    ("names: [a, b]\ndownload: https://x/y.zip\n", "download"),
    ("nc: 2\n", "no 'names:'"),
    ("names:\n", "no 'names:'"),
    ("names: [a, b]\nnc: 3\n", "nc: 3"),
    ("names: {0: a, 2: b}\n", "class ids 0..1"),
    ("names: []\n", "non-empty"),
    ("names: [a, a]\n", "appears twice"),
    ("- a\n- b\n", "mapping"),
])
def test_bad_data_yaml(tmp_path, text, match):
    path = tmp_path / "data.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=match):
        class_names_of(path)


def test_data_yaml_forms(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("names: {1: b, 0: a}\nnc: 2\n")
    assert class_names_of(path) == ["a", "b"]
    path.write_text("names: [a, b]\n")
    assert class_names_of(path) == ["a", "b"]
    with pytest.raises(UserError, match="not found"):
        class_names_of(tmp_path / "missing.yaml")


def _copy_split(dataset, tmp_path):
    target = tmp_path / "train"
    shutil.copytree(dataset / "train", target)
    return target, sorted((target / "labels").iterdir())


@pytest.mark.parametrize("line, match", [
    ("0 0.5 0.5 0.2", r"line 2: expected 5 columns"),
    ("0 0.5 0.5 0.2 0.2 0.1 0.1", r"line 2: expected 5 columns"),
    ("0 0.5 abc 0.2 0.2", r"line 2: non-numeric"),
    ("2 0.5 0.5 0.2 0.2", r"line 2: class id 2 is not one of 0\.\.1"),
    ("-1 0.5 0.5 0.2 0.2", r"line 2: class id -1"),
    ("0.5 0.5 0.5 0.2 0.2", r"line 2: class id 0.5"),
    ("0 1.5 0.5 0.2 0.2", r"line 2: coordinates .* not normalized"),
    ("0 120 80 40 30", r"line 2: coordinates .* not normalized"),
    ("0 nan 0.5 0.2 0.2", r"line 2: non-finite"),
])
def test_malformed_label_lines(dataset, tmp_path, line, match):
    split_dir, labels = _copy_split(dataset, tmp_path)
    bad = labels[0]
    bad.write_text("1 0.5 0.5 0.2 0.2\n" + line + "\n")
    with pytest.raises(UserError, match=match) as err:
        validate_split(resolve_split(str(split_dir), "train"), NAMES)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_background_images_and_problem_count(dataset, tmp_path):
    split_dir, labels = _copy_split(dataset, tmp_path)
    for lb in labels[:2]:
        lb.write_text("")
    labels[2].write_text("\n   \n")
    stats = validate_split(resolve_split(str(split_dir), "train"), NAMES)
    assert stats["images"] == 6 and stats["background"] >= 3
    labels[0].write_text("7 0.5 0.5 0.2 0.2\n")
    labels[1].write_text("7 0.5 0.5 0.2 0.2\n")
    with pytest.raises(UserError, match=r"and 1 more problem"):
        validate_split(resolve_split(str(split_dir), "train"), NAMES)


def test_missing_and_empty_things(dataset, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        resolve_split(str(tmp_path / "nope"), "train")
    with pytest.raises(UserError, match="no path given"):
        resolve_split("", "val")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="no images/ folder"):
        resolve_split(str(tmp_path / "plain"), "train")
    with pytest.raises(UserError, match=r"did you mean .*ds/val\?"):
        resolve_split(str(dataset), "val")
    (tmp_path / "notes.csv").write_text("x")
    with pytest.raises(UserError, match="not a .txt list"):
        resolve_split(str(tmp_path / "notes.csv"), "train")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "labels").mkdir()
    with pytest.raises(UserError, match="no images found"):
        validate_split(resolve_split(str(tmp_path / "empty"), "train"), NAMES)
    split_dir, labels = _copy_split(dataset, tmp_path)
    labels[3].unlink()
    with pytest.raises(UserError, match=r"1 of 6 images have no label file, e\.g\. .*labels"):
        validate_split(resolve_split(str(split_dir), "train"), NAMES)
    shutil.rmtree(split_dir / "labels")
    with pytest.raises(UserError, match="no labels/ folder"):
        validate_split(resolve_split(str(split_dir), "train"), NAMES)


def test_bad_lists(dataset, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{dataset}/train/images/train_00000.jpg\nnotes.md\n")
    with pytest.raises(UserError, match=r"line 2: 'notes.md' is not an image path"):
        resolve_split(str(listing), "train")
    listing.write_text(f"{dataset}/train/images/train_00000.jpg\n{dataset}/train/images/gone.jpg\n")
    with pytest.raises(UserError, match=r"1 listed image\(s\) do not exist, e\.g\. .*gone\.jpg"):
        validate_split(resolve_split(str(listing), "train"), NAMES)
    (tmp_path / "pics").mkdir()
    listing.write_text("pics/a.jpg\n")
    with pytest.raises(UserError, match="not inside an images/ folder"):
        resolve_split(str(listing), "train")


def test_validation_counts_many_files(tmp_path):
    # Validation opens every image (PIL verify) and reads every label; one small real JPEG copied many times.
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 30, 30)).save(buf, format="JPEG")
    (tmp_path / "big" / "images").mkdir(parents=True)
    (tmp_path / "big" / "labels").mkdir()
    for i in range(500):
        (tmp_path / "big" / "images" / f"{i}.jpg").write_bytes(buf.getvalue())
        (tmp_path / "big" / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n")
    stats = validate_split(resolve_split(str(tmp_path / "big"), "train"), NAMES)
    assert stats == {"images": 500, "boxes": 1000, "background": 0}


def test_corrupt_image_is_refused(dataset, tmp_path):
    split_dir, _ = _copy_split(dataset, tmp_path)
    victim = sorted((split_dir / "images").iterdir())[0]
    victim.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(UserError, match="cannot be read"):
        validate_split(resolve_split(str(split_dir), "train"), NAMES)


def test_hidden_files_are_skipped_like_ultralytics(dataset, tmp_path):
    split_dir, _ = _copy_split(dataset, tmp_path)
    (split_dir / "images" / ".partial.jpg").write_bytes(b"")
    os.makedirs(split_dir / "images" / ".cache")
    (split_dir / "images" / ".cache" / "x.jpg").write_bytes(b"")
    from ultralytics.data.base import BaseDataset

    split = resolve_split(str(split_dir), "train")
    assert len(split.images) == 6
    reader = SimpleNamespace(prefix="", fraction=1.0)
    assert BaseDataset.get_img_files(reader, str(split.source)) == [str(p) for p in split.images]
