"""Dataset fingerprints: what they cover, what they ignore, and the per-file hash cache."""

import hashlib
import json
import os
import shutil
import threading

import pytest

from src.cli.main import main
from src.common import fingerprint as fp
from src.common.errors import UserError
from src.common.fingerprint import (compare_fingerprints, compare_split_fingerprints, default_cache_path,
                                    fingerprint_dataset, fingerprint_splits)

OLD = 1_600_000_000  # an mtime well outside the "too fresh to cache" window


@pytest.fixture(autouse=True)
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("STREET_SCENE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "fingerprints.json"


def make_dataset(root, n=4, age=True):
    """images/{train,val}/*.jpg with labels, plus the clutter a real dataset folder collects."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            (root / "images" / split / f"{i}.jpg").write_bytes(os.urandom(500 + i))
            (root / "labels" / split / f"{i}.txt").write_text(f"{i % 2} 0.5 0.5 0.2 0.2\n")
    (root / "labels" / "train.cache").write_bytes(os.urandom(64))  # ultralytics writes these
    (root / "images" / "train" / ".DS_Store").write_bytes(b"x")
    (root / "images" / "train" / "0.npy").write_bytes(b"cached decoded image")
    (root / ".git").mkdir()
    (root / ".git" / "x.png").write_bytes(b"hidden")
    if age:
        age_tree(root)
    return root


def age_tree(root):
    for dirpath, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(dirpath, name), ns=(OLD * 10**9, OLD * 10**9))


def count_hashes(monkeypatch):
    calls = []
    real = fp._hash_one
    monkeypatch.setattr(fp, "_hash_one", lambda path, st: calls.append(path) or real(path, st))
    return calls


def test_fingerprint_matches_its_definition(tmp_path):
    """Counts, bytes and the hash over sorted (relative path, sha256) of images and labels only."""
    root = make_dataset(tmp_path / "ds")
    files = sorted(p for p in root.rglob("*") if p.suffix in (".jpg", ".txt") and ".git" not in p.parts)
    records = sorted((p.relative_to(root).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest()) for p in files)
    expected = hashlib.sha256("".join(f"{rel}\0{sha}\n" for rel, sha in records).encode()).hexdigest()

    result = fingerprint_dataset(root, ["car", "bus"])
    assert result == {"version": fp.FINGERPRINT_VERSION, "files": 16, "bytes": sum(p.stat().st_size for p in files),
                      "sha256": expected, "names": ["car", "bus"]}


def test_deterministic_relocatable_and_cache_independent(tmp_path):
    root = make_dataset(tmp_path / "ds")
    first = fingerprint_dataset(root, ["car"])
    assert fingerprint_dataset(root, ["car"]) == first
    assert fingerprint_dataset(root, ["car"], use_cache=False) == first
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(root, moved)
    assert fingerprint_dataset(moved, ["car"]) == first
    assert fingerprint_dataset(root, {0: "car"}) == first  # ultralytics dict names


def test_split_folder_includes_its_labels_outside_it(tmp_path):
    root = make_dataset(tmp_path / "ds")
    train = fingerprint_dataset(root / "images" / "train")
    assert train["files"] == 8
    before = train["sha256"]
    (root / "labels" / "train" / "1.txt").write_text("2 0.5 0.5 0.2 0.2\n")  # same size, other class
    assert fingerprint_dataset(root / "images" / "train")["sha256"] != before


@pytest.mark.parametrize("change", ["content", "rename", "add", "remove", "label"])
def test_detects_changes(tmp_path, change):
    root = make_dataset(tmp_path / "ds")
    before = fingerprint_dataset(root, ["car"])
    img = root / "images" / "val" / "0.jpg"
    if change == "content":
        data = bytearray(img.read_bytes())
        data[10] ^= 0xFF
        img.write_bytes(bytes(data))
        os.utime(img, ns=(OLD * 10**9, OLD * 10**9))  # even with the old mtime restored
    elif change == "rename":
        img.rename(img.with_name("9.jpg"))
    elif change == "add":
        (root / "images" / "val" / "new.png").write_bytes(b"png")
    elif change == "remove":
        img.unlink()
    else:
        (root / "labels" / "val" / "0.txt").write_text("")
    after = fingerprint_dataset(root, ["car"])
    assert after["sha256"] != before["sha256"]
    assert compare_fingerprints(before, after)


def test_class_names_change_is_reported(tmp_path):
    root = make_dataset(tmp_path / "ds")
    a, b = fingerprint_dataset(root, ["car", "bus"]), fingerprint_dataset(root, ["car", "truck"])
    assert a["sha256"] == b["sha256"]
    assert compare_fingerprints(a, b) == ["class names ['car', 'bus'] -> ['car', 'truck']"]


def test_generated_and_hidden_files_are_ignored(tmp_path):
    root = make_dataset(tmp_path / "ds")
    before = fingerprint_dataset(root)
    (root / "labels" / "train.cache").write_bytes(os.urandom(100))
    (root / "labels" / "val.cache").write_bytes(b"new cache")
    (root / "images" / "val" / "1.npy").write_bytes(b"npy")
    (root / "images" / "val" / ".1.jpg.tmp").write_bytes(b"atomic temp")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "a.jpg").write_bytes(b"hidden dir")
    (root / "notes.md").write_text("not data")
    assert fingerprint_dataset(root) == before


def test_compare_lines(tmp_path):
    root = make_dataset(tmp_path / "ds")
    a = fingerprint_dataset(root)
    (root / "images" / "val" / "0.jpg").write_bytes(b"short")
    b = fingerprint_dataset(root)
    lines = compare_fingerprints(a, b)
    assert lines[0] == f"total bytes {a['bytes']} -> {b['bytes']}"
    assert lines[1].startswith(f"content sha256 {a['sha256'][:12]} -> {b['sha256'][:12]}")
    assert compare_fingerprints(a, a) == []
    assert "not comparable" in compare_fingerprints(a, {**a, "version": 99})[0]
    assert compare_fingerprints(None, a) == ["fingerprint missing before, present now"]


def test_fingerprint_splits_and_split_comparison(tmp_path):
    root = make_dataset(tmp_path / "ds")
    splits = {"train": root / "images" / "train", "val": [root / "images" / "val"]}
    old = fingerprint_splits(splits, ["car"])
    assert old["train"] == fingerprint_dataset(root / "images" / "train", ["car"])
    assert old["val"] == [fingerprint_dataset(root / "images" / "val", ["car"])]
    (root / "labels" / "val" / "2.txt").write_text("0 0.1 0.1 0.1 0.1 0.1\n")
    new = fingerprint_splits({**splits, "test": root / "images" / "val"}, ["car"])
    lines = compare_split_fingerprints(old, new)
    assert lines[0] == "test: split only now"
    assert [line.split(":")[0] for line in lines[1:]] == ["val[0]", "val[0]"]  # bytes and content


def test_txt_image_list(tmp_path):
    root = make_dataset(tmp_path / "ds")
    listed = [root / "images" / "train" / "0.jpg", root / "images" / "train" / "2.jpg"]
    lst = root / "train.txt"
    lst.write_text(f"./images/train/0.jpg\n{listed[1]}\n\n./labels/train/1.txt\n", encoding="utf-8")
    result = fingerprint_dataset(lst)
    assert result["files"] == 4  # two images and their two labels
    assert result["bytes"] == sum(p.stat().st_size for p in listed) + 2 * (root / "labels/train/0.txt").stat().st_size
    (root / "labels" / "train" / "2.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    assert fingerprint_dataset(lst)["sha256"] != result["sha256"]
    (root / "images" / "train" / "3.jpg").write_bytes(b"not listed")
    assert fingerprint_dataset(lst)["files"] == 4


def test_txt_list_with_missing_image_is_user_error(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text(f"{tmp_path / 'images' / 'gone.jpg'}\n")
    with pytest.raises(UserError, match="names 1 missing file"):
        fingerprint_dataset(lst)


def test_bad_paths(tmp_path):
    with pytest.raises(UserError, match="not found"):
        fingerprint_dataset(tmp_path / "nope")
    (tmp_path / "data.yaml").write_text("a: 1\n")
    with pytest.raises(UserError, match="expected a dataset folder"):
        fingerprint_dataset(tmp_path / "data.yaml")


def test_symlink_loop_terminates(tmp_path):
    root = make_dataset(tmp_path / "ds")
    os.symlink(root / "images", root / "images" / "train" / "loop")
    assert fingerprint_dataset(root)["files"] > 0


def test_cache_makes_second_run_hash_nothing(tmp_path, monkeypatch, cache_env):
    root = make_dataset(tmp_path / "ds")
    calls = count_hashes(monkeypatch)
    cold = fingerprint_dataset(root)
    assert len(calls) == 16
    assert len(json.loads(cache_env.read_text())["entries"]) == 16
    calls.clear()
    assert fingerprint_dataset(root) == cold
    assert calls == []


def test_same_size_rewrite_with_old_mtime_invalidates_cache(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "ds")
    cold = fingerprint_dataset(root)
    label = root / "labels" / "train" / "0.txt"
    label.write_text("1 0.5 0.5 0.2 0.2\n")
    os.utime(label, ns=(OLD * 10**9, OLD * 10**9))  # size and mtime as before: only ctime/inode tell
    calls = count_hashes(monkeypatch)
    warm = fingerprint_dataset(root)
    assert calls == [str(label)]
    assert warm["sha256"] != cold["sha256"]
    assert warm == fingerprint_dataset(root, use_cache=False)


def test_freshly_written_files_are_not_cached(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "ds", age=False)
    calls = count_hashes(monkeypatch)
    fingerprint_dataset(root)
    fingerprint_dataset(root)
    assert len(calls) == 32  # mtime within 2 s of hashing: hashed again rather than trusted


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"format": 1, "entries": {"/x": [1, 2]}}', b"\xff\xfe"])
def test_corrupt_cache_is_ignored_and_rebuilt(tmp_path, cache_env, content):
    root = make_dataset(tmp_path / "ds")
    expected = fingerprint_dataset(root, use_cache=False)
    cache_env.parent.mkdir(parents=True)
    cache_env.write_bytes(content)
    assert fingerprint_dataset(root) == expected
    assert len(json.loads(cache_env.read_text())["entries"]) == 16


MALFORMED_CACHES = {
    "100000 open brackets (RecursionError)": b"[" * 100_000,
    "entries nested 100000 deep": b'{"format": 1, "entries": ' + b"[" * 100_000,
    "a value nested 900 deep": b'{"format": 1, "entries": {"/x": ' + b"[" * 900 + b"]" * 900 + b"}}",
    "5000-digit integer": b'{"format": 1, "entries": {"/x": [' + b"9" * 5000 + b', 1, 1, 1, "a"]}}',
    "NaN and Infinity": b'{"format": NaN, "entries": {"/x": [Infinity, -Infinity, NaN, 1, "a"]}}',
    "empty file": b"",
    "UTF-8 BOM": b"\xef\xbb\xbf" + b'{"format": 1, "entries": {}}',
    "format is a list": b'{"format": [1], "entries": {}}',
    "entries is a list": b'{"format": 1, "entries": [["/x", 1, 2, 3, 4]]}',
    "entries is null": b'{"format": 1, "entries": null}',
    "entry values of every wrong type": json.dumps({"format": 1, "entries": {
        "/a": "0" * 64, "/b": {"size": 1}, "/c": None, "/d": [1, 2, 3, 4, 5], "/e": [True, 2, 3, 4, "f" * 64],
        "/f": [1.5, 2, 3, 4, "f" * 64], "/g": [[1], 2, 3, 4, "f" * 64], "/h": [1, 2, 3, 4, ["f" * 64]],
    }}).encode(),
}


@pytest.mark.parametrize("kind", list(MALFORMED_CACHES))
def test_malformed_cache_reads_as_empty_and_is_replaced(tmp_path, cache_env, kind):
    root = make_dataset(tmp_path / "ds")
    expected = fingerprint_dataset(root, use_cache=False)
    cache_env.parent.mkdir(parents=True)
    cache_env.write_bytes(MALFORMED_CACHES[kind])
    assert fingerprint_dataset(root) == expected
    data = json.loads(cache_env.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert data["format"] == 1 and len(data["entries"]) == 16  # replaced by a valid cache of this dataset
    assert all(type(v) is list and len(v) == 5 for v in data["entries"].values())
    assert fingerprint_dataset(root) == expected  # and the new cache is used correctly


def test_cache_path_that_is_a_folder_still_fingerprints(tmp_path, cache_env):
    root = make_dataset(tmp_path / "ds")
    cache_env.mkdir(parents=True)  # EISDIR on read and on replace
    (cache_env / "keep.txt").write_text("user file")
    assert fingerprint_dataset(root) == fingerprint_dataset(root, use_cache=False)
    assert [p.name for p in cache_env.iterdir()] == ["keep.txt"]


def test_the_cache_folder_is_created_on_first_save(tmp_path):
    root = make_dataset(tmp_path / "ds")
    cache = tmp_path / "new" / "deeper" / "fingerprints.json"
    fingerprint_dataset(root, cache_path=cache)
    assert len(json.loads(cache.read_text())["entries"]) == 16


def test_wrong_cached_hash_format_is_not_trusted(tmp_path, cache_env):
    root = make_dataset(tmp_path / "ds")
    fingerprint_dataset(root)
    data = json.loads(cache_env.read_text())
    for entry in data["entries"].values():
        entry[4] = "bad"
    cache_env.write_text(json.dumps(data))
    assert fingerprint_dataset(root) == fingerprint_dataset(root, use_cache=False)


def test_unwritable_cache_still_fingerprints(tmp_path):
    root = make_dataset(tmp_path / "ds")
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    result = fingerprint_dataset(root, cache_path=blocker / "fingerprints.json")
    assert result == fingerprint_dataset(root, use_cache=False)


def test_concurrent_writers_leave_a_valid_cache(tmp_path, cache_env):
    roots = [make_dataset(tmp_path / f"ds{i}") for i in range(4)]
    results, errors = {}, []

    def work(i):
        try:
            results[i] = fingerprint_dataset(roots[i])
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(results[i] == fingerprint_dataset(roots[i], use_cache=False) for i in range(4))
    assert len(json.loads(cache_env.read_text())["entries"]) >= 16  # valid JSON; last writer's merge at least


def test_default_cache_path(monkeypatch, tmp_path):
    assert default_cache_path() == tmp_path / "cache" / "fingerprints.json"
    monkeypatch.delenv("STREET_SCENE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_path() == tmp_path / "xdg" / "street-scene" / "fingerprints.json"


def test_image_suffixes_match_ultralytics():
    from ultralytics.data.utils import IMG_FORMATS

    from src.common.image_files import IMAGE_SUFFIXES, PILLOW_IMAGE_SUFFIXES, is_image, suffix_of

    assert IMAGE_SUFFIXES == set(IMG_FORMATS)
    assert PILLOW_IMAGE_SUFFIXES <= IMAGE_SUFFIXES  # what we decode ourselves, ultralytics decodes too
    assert [suffix_of(n) for n in ("a/B.JPG", "x.tar.png", "noext", "dir.d/noext")] == ["jpg", "png", "", ""]
    assert is_image("m.PNG", PILLOW_IMAGE_SUFFIXES) and not is_image("m.heic", PILLOW_IMAGE_SUFFIXES)


def test_cli_text_and_json(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    assert main(["data", "fingerprint", str(root), "--names", "car", "bus", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    # a detection split folder: the run records its images/ folder (labels are found beside it)
    assert shown == {"path": str(root / "images"), **fingerprint_dataset(root / "images", ["car", "bus"])}
    assert main(["data", "fingerprint", str(root), "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert f"sha256: {shown['sha256']}" in out.splitlines()
    assert f"files: {shown['files']}" in out.splitlines()


def test_cli_prints_what_a_run_records_for_the_same_data_argument(tmp_path, capsys):
    from src.data.detection_data import resolve_split
    from src.data.segmentation_data import resolve_segmentation_split

    det = make_dataset(tmp_path / "det")
    seg = tmp_path / "seg"
    (seg / "images").mkdir(parents=True)
    (seg / "masks").mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(seg / "images" / "a.png")
    Image.new("L", (8, 8)).save(seg / "masks" / "a.png")
    for spec, recorded in ((det, resolve_split(str(det), "train").source),
                           (seg, resolve_segmentation_split(str(seg), "train").root)):
        assert main(["data", "fingerprint", str(spec), "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["path"] == str(recorded)
        assert shown["sha256"] == fingerprint_dataset(recorded)["sha256"]


def test_cli_bad_path_exits_2(tmp_path, capsys):
    assert main(["data", "fingerprint", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dataset path not found") and err.count("\n") == 1
