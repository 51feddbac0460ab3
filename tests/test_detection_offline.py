"""src/tasks/detection/offline.py: ultralytics' label caches live in our cache dir, never in the user's dataset.

ultralytics 8.4.190 keeps `<labels dir>.cache` beside each labels folder and reads it back with
`np.load(allow_pickle=True)`: a pickle planted in a dataset would run code. After configure_ultralytics() it reads
and writes `<config dir>/label-caches/<sha256>.cache` instead.
"""

from pathlib import Path

import numpy as np
import pytest

from tests.detection_e2e_support import VEHICLE_CLASSES, make_data



class _CreatesFile:
    """Unpickling this calls open(path, "w"): proof that a cache file was unpickled."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def plant_cache(path: Path, marker: Path) -> bytes:
    """An ultralytics-style .cache (np.save of a pickled object) whose loading creates `marker`."""
    with open(path, "wb") as f:
        np.save(f, np.array(_CreatesFile(marker), dtype=object), allow_pickle=True)
    return path.read_bytes()




@pytest.fixture(scope="module")
def cache_dir(offline):
    import ultralytics.utils

    return Path(ultralytics.utils.USER_CONFIG_DIR) / "label-caches"


def test_planted_cache_is_a_real_threat_to_unpatched_ultralytics(tmp_path, offline):
    """The control: ultralytics' own loader does run the planted pickle."""
    import ultralytics.data.utils as data_utils

    marker = tmp_path / "ran"
    plant_cache(tmp_path / "labels.cache", marker)
    data_utils.load_dataset_cache_file(tmp_path / "labels.cache")
    assert marker.exists()


def test_redirect_is_idempotent_and_follows_a_new_dir(tmp_path, offline, cache_dir):
    import ultralytics.data.dataset as dataset

    from src.tasks.detection.offline import configure_ultralytics, redirect_label_caches

    load, save = dataset.load_dataset_cache_file, dataset.save_dataset_cache_file
    assert load.cache_dir == save.cache_dir == cache_dir.resolve()
    configure_ultralytics(tmp_path / "ignored")  # ultralytics is imported: the dir it chose stays
    assert (dataset.load_dataset_cache_file, dataset.save_dataset_cache_file) == (load, save)
    try:
        redirect_label_caches(tmp_path / "other")
        assert dataset.load_dataset_cache_file.cache_dir == (tmp_path / "other").resolve()
        assert dataset.load_dataset_cache_file.__wrapped__ is load.__wrapped__  # never a wrapper of a wrapper
    finally:
        redirect_label_caches(cache_dir)


def test_changed_ultralytics_internals_fail_loudly(tmp_path, offline, monkeypatch):
    import ultralytics.data.dataset as dataset

    from src.tasks.detection.offline import redirect_label_caches

    monkeypatch.setattr(dataset, "load_dataset_cache_file", lambda path, mmap=False: {})
    with pytest.raises(RuntimeError, match="load_dataset_cache_file is not the 8.4.190 function"):
        redirect_label_caches(tmp_path)


def test_cache_paths_are_per_labels_folder(tmp_path):
    from src.tasks.detection.offline import label_cache_path

    a = label_cache_path(tmp_path, tmp_path / "d" / "train" / "labels.cache")
    assert a == label_cache_path(tmp_path, tmp_path / "d" / "x" / ".." / "train" / "labels.cache")
    assert a != label_cache_path(tmp_path, tmp_path / "d" / "val" / "labels.cache")
    assert a.parent == tmp_path and a.suffix == ".cache" and len(a.stem) == 64


def test_training_keeps_caches_out_of_the_dataset_and_never_loads_a_planted_one(tmp_path, offline, cache_dir):
    from ultralytics import YOLO

    from src.tasks.detection.offline import label_cache_path

    data = make_data(tmp_path / "data", n_train=4, n_val=2, n_test=0)
    marker = tmp_path / "unpickled"
    planted = plant_cache(data / "val" / "labels.cache", marker)  # where ultralytics looks for val's cache
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text(f"path: {data}\ntrain: train/images\nval: val/images\nnames: {VEHICLE_CLASSES}\n")
    yolo = YOLO("yolov8n.yaml")
    yolo.train(data=str(data_yaml), epochs=1, batch=2, imgsz=64, device="cpu", workers=0, plots=False, save=False,
               amp=False, project=str(tmp_path / "runs"), name="t", exist_ok=True, verbose=False)

    assert not marker.exists()
    assert (data / "val" / "labels.cache").read_bytes() == planted  # never read, never replaced
    assert [p for p in data.rglob("*.cache") if p != data / "val" / "labels.cache"] == []
    ours = {split: label_cache_path(cache_dir, data / split / "labels.cache") for split in ("train", "val")}
    assert all(p.is_file() for p in ours.values())

    before = {split: p.stat().st_mtime_ns for split, p in ours.items()}
    yolo.val(data=str(data_yaml), imgsz=64, batch=2, device="cpu", plots=False, project=str(tmp_path / "runs"),
             name="v", exist_ok=True, verbose=False)
    assert {split: p.stat().st_mtime_ns for split, p in ours.items()} == before  # read back from our cache
    assert not marker.exists() and [p.name for p in data.rglob("*.cache")] == ["labels.cache"]
