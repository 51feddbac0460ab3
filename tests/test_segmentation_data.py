"""Segmentation data: images/ + masks/ pairing, dataset yaml, and every bad-mask case."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.common.errors import UserError
from src.data import synthetic
from src.data.segmentation_data import (load_segmentation_yaml, resolve_segmentation_split,
                                        validate_segmentation_split)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("seg") / "ds"
    synthetic.make_segmentation_dataset(out, 4, 2, 0, seed=2, image_size=(96, 48))
    return out


@pytest.fixture
def split_dir(dataset, tmp_path):
    return Path(shutil.copytree(dataset / "train", tmp_path / "train"))


def _check(directory, num_classes=8, ignore=255):
    return validate_segmentation_split(resolve_segmentation_split(directory, "train"), num_classes, ignore)


def test_generated_split_resolves_and_validates(dataset):
    split = resolve_segmentation_split(dataset / "train", "train")
    assert [p.name for p in split.images] == [p.name for p in split.masks] == [f"train_{i:05d}.png" for i in range(4)]
    stats = validate_segmentation_split(split, 8, 255)
    assert stats["images"] == 4 and sum(stats["pixels_per_class"]) + stats["ignored_pixels"] == 4 * 96 * 48


def test_dataset_yaml(tmp_path):
    names, ignore = load_segmentation_yaml(REPO / "configs/datasets/road_scene_segmentation.yaml")
    assert names == ["road", "sidewalk", "building", "vegetation", "sky", "vehicle", "person", "traffic_sign"]
    assert ignore == 255
    path = tmp_path / "d.yaml"
    path.write_text("names: [road, sky]\n")
    assert load_segmentation_yaml(path) == (["road", "sky"], 255)
    path.write_text("names: [road, sky]\nignore_index: 1\n")
    with pytest.raises(UserError, match="ignore_index 1 is also a class id"):
        load_segmentation_yaml(path)
    path.write_text("names: [road, sky]\nignore_index: 300\n")
    with pytest.raises(UserError, match="0 to 255"):
        load_segmentation_yaml(path)
    path.write_text("names: [road, sky]\ndownload: bash get.sh\n")
    with pytest.raises(UserError, match="download"):
        load_segmentation_yaml(path)


def test_missing_folders(tmp_path, split_dir):
    with pytest.raises(UserError, match="does not exist"):
        resolve_segmentation_split(tmp_path / "nope", "val")
    shutil.rmtree(split_dir / "masks")
    with pytest.raises(UserError, match="no masks/ folder"):
        resolve_segmentation_split(split_dir, "train")
    (tmp_path / "e" / "images").mkdir(parents=True)
    (tmp_path / "e" / "masks").mkdir()
    with pytest.raises(UserError, match="no images"):
        resolve_segmentation_split(tmp_path / "e", "train")


def test_count_and_name_mismatch(split_dir):
    shutil.copy(split_dir / "images" / "train_00000.png", split_dir / "images" / "extra.png")
    with pytest.raises(UserError, match=r"5 images and 4 masks .*images without a mask: 1, e\.g\. extra"):
        _check(split_dir)
    (split_dir / "images" / "extra.png").unlink()
    (split_dir / "masks" / "train_00001.png").rename(split_dir / "masks" / "other.png")
    with pytest.raises(UserError, match=r"masks without an image: 1, e\.g\. other"):
        _check(split_dir)


def test_size_mismatch(split_dir):
    Image.new("L", (40, 20)).save(split_dir / "masks" / "train_00002.png")
    with pytest.raises(UserError, match=r"train_00002\.png is 40x20 but its image .* is 96x48"):
        _check(split_dir)


def test_rgb_mask(split_dir):
    Image.new("RGB", (96, 48), (128, 64, 128)).save(split_dir / "masks" / "train_00003.png")
    with pytest.raises(UserError, match=r"mode RGB \(3 channel\(s\)\); masks must be single-channel"):
        _check(split_dir)


def test_values_out_of_range_but_ignore_index_is_fine(split_dir):
    mask = np.zeros((48, 96), dtype=np.uint8)
    mask[:, :10] = 255
    Image.fromarray(mask).save(split_dir / "masks" / "train_00000.png")
    _check(split_dir)
    mask[0, 0] = 8
    mask[1, 1] = 200
    Image.fromarray(mask).save(split_dir / "masks" / "train_00000.png")
    with pytest.raises(UserError, match=r"value\(s\) 8, 200 outside the class ids 0\.\.7 and the ignore index 255"):
        _check(split_dir)
    with pytest.raises(UserError, match=r"value\(s\) 200 outside"):
        _check(split_dir, num_classes=9)


def test_palette_masks_count_as_class_ids(split_dir):
    mask = Image.fromarray(np.full((48, 96), 3, dtype=np.uint8)).convert("P")
    mask.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    mask.save(split_dir / "masks" / "train_00000.png")
    assert _check(split_dir)["pixels_per_class"][3] >= 96 * 48


def test_jpeg_masks_are_refused(split_dir):
    Image.new("L", (96, 48)).save(split_dir / "masks" / "train_00000.jpg")
    (split_dir / "masks" / "train_00000.png").unlink()
    with pytest.raises(UserError, match="is a JPEG"):
        resolve_segmentation_split(split_dir, "train")


def test_cityscapes_names_pair_up(tmp_path):
    root = tmp_path / "cs"
    for city in ("aachen", "bonn"):
        (root / "images" / city).mkdir(parents=True)
        (root / "masks" / city).mkdir(parents=True)
        stem = f"{city}_000000_000019"
        Image.new("RGB", (64, 32)).save(root / "images" / city / f"{stem}_leftImg8bit.png")
        Image.new("L", (64, 32), 255).save(root / "masks" / city / f"{stem}_gtFine_labelTrainIds.png")
        Image.new("L", (64, 32), 33).save(root / "masks" / city / f"{stem}_gtFine_labelIds.png")
        Image.new("RGB", (64, 32)).save(root / "masks" / city / f"{stem}_gtFine_color.png")
    split = resolve_segmentation_split(root, "train")
    assert [p.name for p in split.masks] == ["aachen_000000_000019_gtFine_labelTrainIds.png",
                                             "bonn_000000_000019_gtFine_labelTrainIds.png"]
    assert validate_segmentation_split(split, 19, 255)["ignored_pixels"] == 2 * 64 * 32
