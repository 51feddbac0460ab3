"""`street-scene convert`: each format into our layouts, checked with the loaders training uses (resolve_split +
validate_split, resolve_segmentation_split + validate_segmentation_split), the split, --map, the provenance record,
and one real training run on a converted KITTI-like dataset."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.cli.main import main
from src.common.yaml_io import load_yaml
from src.data.convert import cityscapes, splitting
from src.data.data_yaml import class_names as class_names_of
from src.data.detection_data import resolve_split, validate_split
from src.data.segmentation_data import load_segmentation_yaml, resolve_segmentation_split, validate_segmentation_split
from tests.convert_fixtures import (CITYSCAPES_FRAMES, CITYSCAPES_IDS, KITTI_SIZE, cityscapes_mask, leftovers,
                                    make_bdd, make_cityscapes, make_coco, make_kitti, tree_digest)
from tests.helpers import REPO_ROOT, run_script, subprocess_env

DATASETS = REPO_ROOT / "configs" / "datasets"


def convert(capsys, *args):
    """Run `street-scene convert ARGS` in this process; return what it printed (stdout, then any notes)."""
    code = main(["convert", *map(str, args)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out + err


def labels_of(folder: Path) -> dict:
    return {p.stem: [[float(v) for v in line.split()] for line in p.read_text().splitlines()]
            for p in sorted((folder / "labels").glob("*.txt"))}


def check_detection(folder, yaml_name: str) -> dict:
    names = class_names_of(DATASETS / yaml_name)
    return validate_split(resolve_split(str(folder), "train"), names)


def yolo(x1, y1, x2, y2, size):
    w, h = size
    return [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]


def test_kitti_vehicles_boxes_clipped_dropped_and_counted(tmp_path, capsys):
    src = make_kitti(tmp_path / "kitti" / "training")
    before = tree_digest(src)
    out = tmp_path / "veh"
    printed = convert(capsys, "kitti", src, "--task", "vehicle_detection", "--out", out)
    assert tree_digest(src) == before  # the source is never modified
    assert check_detection(out, "vehicle_detection.yaml") == {"images": 5, "boxes": 12, "background": 1}
    rows = labels_of(out)["000000"]
    expected = [[0, *yolo(10, 12, 40.5, 30, KITTI_SIZE)], [0, *yolo(0, 20, 30, 64, KITTI_SIZE)],
                [1, *yolo(80, 10, 96, 40, KITTI_SIZE)]]
    assert np.allclose(rows, expected, atol=1e-6)
    assert (out / "labels" / "000004.txt").read_text() == ""
    record = load_yaml(out / "conversion.yaml")
    assert record["counts"] == {
        "images": 5, "objects": {"car": 8, "truck": 4, "bus": 0, "motorcycle": 0, "bicycle": 0},
        "clipped_boxes": 8, "dropped": {"not_in_mapping": {"Cyclist": 4, "DontCare": 4, "Misc": 4, "Pedestrian": 4,
                                                           "Person_sitting": 4, "Tram": 4}, "degenerate_box": 8}}
    assert record["format"] == "kitti" and record["source"] == {"path": str(src)}
    assert record["mapping"] == {"Car": "car", "Van": "car", "Truck": "truck"}
    assert record["street_scene_version"] and record["images_linked"] == 5 and record["split"] is None
    assert os.path.samefile(out / "images" / "000000.png", src / "image_2" / "000000.png")  # hard-linked
    assert "car 8, truck 4" in printed and "DontCare 4" in printed and "degenerate box: 8" in printed
    assert not leftovers(tmp_path)


def test_kitti_pedestrians_and_copy(tmp_path, capsys):
    src = make_kitti(tmp_path / "kitti", n=2)
    out = tmp_path / "peds"
    convert(capsys, "kitti", src, "--task", "pedestrian_detection", "--out", out, "--copy")
    assert check_detection(out, "pedestrian_detection.yaml")["boxes"] == 3
    assert [row[0] for row in labels_of(out)["000000"]] == [0, 0, 1]  # Pedestrian, Person_sitting, Cyclist
    assert not os.path.samefile(out / "images" / "000000.png", src / "image_2" / "000000.png")
    assert (out / "images" / "000000.png").read_bytes() == (src / "image_2" / "000000.png").read_bytes()
    assert load_yaml(out / "conversion.yaml")["images_copied"] == 2


def test_val_fraction_split_is_deterministic_and_by_name(tmp_path, capsys):
    src = make_kitti(tmp_path / "kitti", n=10)
    for name in ("a", "b"):
        convert(capsys, "kitti", src, "--task", "vehicle_detection", "--out", tmp_path / name, "--val-fraction",
                "0.3", "--seed", "5")
    assert tree_digest(tmp_path / "a", mtimes=False) == tree_digest(tmp_path / "b", mtimes=False)
    val = sorted(p.stem for p in (tmp_path / "a" / "val" / "images").iterdir())
    train = sorted(p.stem for p in (tmp_path / "a" / "train" / "images").iterdir())
    assert len(val) == 3 and len(train) == 7 and not set(val) & set(train)
    for split in ("train", "val"):
        check_detection(tmp_path / "a" / split, "vehicle_detection.yaml")
    record = load_yaml(tmp_path / "a" / "conversion.yaml")
    assert record["split"] == {"val_fraction": 0.3, "seed": 5}
    assert record["splits"]["val"]["images"] == 3 and record["splits"]["train"]["objects"]["car"] == 7 * 2 - 2
    names = [f"{i:06d}" for i in range(10)]
    first = splitting.assign_splits(names, 0.3, 5)
    assert splitting.assign_splits(list(reversed(names)), 0.3, 5) == first  # listing order does not matter
    assert sorted(k for k, v in first.items() if v == "val") == val
    assert any(splitting.assign_splits(names, 0.3, seed) != first for seed in range(6))
    # An image keeps its side when others are added: the key is the name and the seed alone.
    more = splitting.assign_splits(names + [f"x{i}" for i in range(20)], 0.3, 5)
    assert sum(more[n] == "val" for n in val) >= 2


def test_bdd100k_old_names_and_labels_without_box2d(tmp_path, capsys):
    label_file, images = make_bdd(tmp_path / "bdd")
    before = tree_digest(tmp_path / "bdd")
    convert(capsys, "bdd100k", label_file, "--images", images, "--task", "vehicle_detection", "--out",
            tmp_path / "veh")
    convert(capsys, "bdd100k", label_file, "--images", images, "--task", "pedestrian_detection", "--out",
            tmp_path / "peds")
    assert tree_digest(tmp_path / "bdd") == before
    assert check_detection(tmp_path / "veh", "vehicle_detection.yaml") == {"images": 3, "boxes": 7, "background": 1}
    assert check_detection(tmp_path / "peds", "pedestrian_detection.yaml") == {"images": 3, "boxes": 2,
                                                                                "background": 2}
    veh = load_yaml(tmp_path / "veh" / "conversion.yaml")["counts"]
    assert veh["objects"] == {"car": 1, "truck": 1, "bus": 1, "motorcycle": 2, "bicycle": 2}
    assert veh["clipped_boxes"] == 1
    assert veh["dropped"] == {"not_in_mapping": {"pedestrian": 1, "person": 1, "rider": 1, "traffic sign": 1},
                              "degenerate_box": 0, "no_box2d": 2}
    peds = load_yaml(tmp_path / "peds" / "conversion.yaml")["counts"]
    assert peds["objects"] == {"pedestrian": 1, "cyclist": 1} and peds["dropped"]["degenerate_box"] == 1
    rows = labels_of(tmp_path / "veh")["b1c66a42-6f7d68ca"]
    assert np.allclose(rows, [[0, *yolo(10, 20, 50, 50, (128, 72))], [3, *yolo(60, 30, 80, 60, (128, 72))],
                              [4, *yolo(90, 30, 110, 60, (128, 72))]], atol=1e-6)
    assert (tmp_path / "veh" / "labels" / "b1d0a191-06deb55d.txt").read_text() == ""


def test_coco_non_contiguous_ids_crowd_and_each_subtask(tmp_path, capsys):
    label_file, images = make_coco(tmp_path / "coco")
    for task in ("vehicle_detection", "pedestrian_detection", "traffic_sign_detection"):
        convert(capsys, "coco", label_file, "--images", images, "--task", task, "--out", tmp_path / task)
        check_detection(tmp_path / task, f"{task}.yaml")
    veh = load_yaml(tmp_path / "vehicle_detection" / "conversion.yaml")["counts"]
    assert veh["objects"]["car"] == 1 and veh["objects"]["truck"] == 1 and veh["clipped_boxes"] == 1
    assert veh["dropped"] == {"not_in_mapping": {"person": 1, "stop sign": 1, "toothbrush": 1}, "degenerate_box": 0,
                              "iscrowd": 1}
    assert np.allclose(labels_of(tmp_path / "vehicle_detection")["000000000139"],
                       [[0, *yolo(10, 20, 40, 35, (120, 80))]], atol=1e-6)
    assert np.allclose(labels_of(tmp_path / "vehicle_detection")["000000000285"],
                       [[1, *yolo(70, 60, 100, 100, (100, 100))]], atol=1e-6)
    peds = labels_of(tmp_path / "pedestrian_detection")
    assert [r[0] for r in peds["000000000139"]] == [0] and peds["000000000632"] == []
    assert [r[0] for r in labels_of(tmp_path / "traffic_sign_detection")["000000000285"]] == [0]  # stop


def test_map_file_overrides_entries_and_notes_unused_ones(tmp_path, capsys):
    src = make_kitti(tmp_path / "kitti", n=2)
    mapping = tmp_path / "map.yaml"
    mapping.write_text("Tram: bus\nVan: null\nCyclist: bicycle\nLorry: truck\n")
    printed = convert(capsys, "kitti", src, "--task", "vehicle_detection", "--out", tmp_path / "out", "--map",
                      mapping)
    record = load_yaml(tmp_path / "out" / "conversion.yaml")
    assert record["mapping"] == {"Car": "car", "Van": None, "Truck": "truck", "Tram": "bus", "Cyclist": "bicycle",
                                 "Lorry": "truck"}
    assert record["counts"]["objects"] == {"car": 1, "truck": 1, "bus": 1, "motorcycle": 0, "bicycle": 1}
    assert record["counts"]["dropped"]["not_in_mapping"]["Van"] == 1
    assert record["map_file"] == str(mapping) and record["unused_map_entries"] == ["Lorry"]
    assert "never seen in the source (typos?): Lorry" in printed
    # A subtask without a default mapping works with a --map file.
    signs = tmp_path / "signs.yaml"
    signs.write_text("Misc: stop\n")
    convert(capsys, "kitti", src, "--task", "traffic_sign_detection", "--out", tmp_path / "signs", "--map", signs)
    assert check_detection(tmp_path / "signs", "traffic_sign_detection.yaml")["boxes"] == 1
    none = tmp_path / "none.yaml"
    none.write_text("Car: null\nVan: null\nTruck: null\n")
    printed = convert(capsys, "kitti", src, "--task", "vehicle_detection", "--out", tmp_path / "none", "--map", none)
    assert "note: no object was converted" in printed
    assert check_detection(tmp_path / "none", "vehicle_detection.yaml")["background"] == 2


def test_cityscapes_train_ids_and_flat_names(tmp_path, capsys):
    root = make_cityscapes(tmp_path / "cityscapes")
    before = tree_digest(root)
    convert(capsys, "cityscapes", root, "--split", "train", "--task", "cityscapes", "--out", tmp_path / "cs")
    assert tree_digest(root) == before
    names, ignore = load_segmentation_yaml(DATASETS / "cityscapes.yaml")
    split = resolve_segmentation_split(tmp_path / "cs", "train")
    assert [p.name for p in split.images] == ["aachen_000000_000019.png", "aachen_000001_000019.png",
                                              "bremen_000000_000019.png"]
    assert [p.name for p in split.masks] == [p.name for p in split.images]
    stats = validate_segmentation_split(split, len(names), ignore)
    table = {label.id: label.trainId for label in cityscapes.labels()}
    expected = np.vectorize(lambda v: table[v] if 0 <= table[v] < 255 else 255)(cityscapes_mask(1)).astype(np.uint8)
    assert np.array_equal(np.asarray(Image.open(split.masks[1])), expected)
    assert stats["pixels_per_class"][names.index("rider")] > 0 and stats["ignored_pixels"] > 0
    record = load_yaml(tmp_path / "cs" / "conversion.yaml")
    assert record["source"]["split"] == "train" and record["source"]["label_table"].startswith("cityscapesscripts ")
    assert record["mapping"]["traffic light"] == "traffic_light" and record["mapping"]["parking"] is None
    assert record["counts"]["ignored_pixels"] == stats["ignored_pixels"] and record["ignore_index"] == 255


def test_cityscapes_onto_road_scene_classes(tmp_path, capsys):
    root = make_cityscapes(tmp_path / "cityscapes", split="val")
    convert(capsys, "cityscapes", root, "--split", "val", "--task", "road_scene_segmentation", "--out",
            tmp_path / "rs", "--val-fraction", "0.34", "--seed", "1")
    names, ignore = load_segmentation_yaml(DATASETS / "road_scene_segmentation.yaml")
    for part in ("train", "val"):
        validate_segmentation_split(resolve_segmentation_split(tmp_path / "rs" / part, part), len(names), ignore)
    ours = {label.id: label.name for label in cityscapes.labels()}
    expected_by_id = {i: names.index(cityscapes.ROAD_SCENE_MAP[ours[i]]) if ours[i] in cityscapes.ROAD_SCENE_MAP
                      else 255 for i in CITYSCAPES_IDS}
    assert expected_by_id[26] == names.index("vehicle") and expected_by_id[25] == names.index("person")
    assert expected_by_id[22] == names.index("vegetation") and expected_by_id[19] == 255
    for mask in (tmp_path / "rs").glob("*/masks/*.png"):
        source = cityscapes_mask([name for _, name in CITYSCAPES_FRAMES].index(mask.stem))
        assert np.array_equal(np.asarray(Image.open(mask)), np.vectorize(expected_by_id.get)(source))


def test_cityscapes_tables_agree_with_the_configs():
    from src.common.config_manager import ConfigManager

    tasks = ConfigManager(REPO_ROOT / "configs" / "segmentation_config.yaml").get_config()["segmentation"]["tasks"]
    assert tasks["cityscapes"]["classes"] == cityscapes.train_classes()
    assert load_segmentation_yaml(DATASETS / "cityscapes.yaml") == (cityscapes.train_classes(), 255)
    known = set(cityscapes.source_classes())
    assert set(cityscapes.ROAD_SCENE_MAP) <= known
    assert set(cityscapes.ROAD_SCENE_MAP.values()) == set(tasks["road_scene_segmentation"]["classes"])


def test_convert_itself_does_not_import_torch(tmp_path):
    src = make_kitti(tmp_path / "kitti", n=2)
    code = ("import sys\nfrom src.cli.main import main\n"
            f"assert main(['convert', 'kitti', {str(src)!r}, '--task', 'vehicle_detection', '--out', "
            f"{str(tmp_path / 'out')!r}]) == 0\n"
            "assert 'torch' not in sys.modules and 'ultralytics' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=subprocess_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_a_converted_kitti_dataset_trains(tmp_path, capsys):
    from tests.detection_e2e_support import CONFIG, NO_PLOTS, TRAIN_SECTION, VEHICLE_YAML, workspace_env

    src = make_kitti(tmp_path / "kitti", n=8, size=(64, 64))
    data = tmp_path / "data"
    convert(capsys, "kitti", src, "--task", "vehicle_detection", "--out", data, "--val-fraction", "0.25")
    overrides = ["detection.training.image_size=64", "detection.training.epochs=1", "detection.training.batch_size=2",
                 *NO_PLOTS]
    proc = run_script("train.py", "--config", CONFIG, *TRAIN_SECTION, "--train-data", data / "train",
                      "--val-data", data / "val", "--data-yaml", VEHICLE_YAML, "--run-name", "kitti",
                      *[a for o in overrides for a in ("--config-override", o)], cwd=tmp_path,
                      env=workspace_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Training completed" in proc.stdout
    runs = list((tmp_path / "outputs").iterdir())
    assert len(runs) == 1 and (runs[0] / "best_model.pth").is_file()
