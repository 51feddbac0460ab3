"""src/common/run_dir.py: run ids, atomic run dir creation, output root, resolving runs."""

import re
import threading
from datetime import datetime
from pathlib import Path

import pytest

from src.common.errors import UserError
from src.common.run_dir import OUTPUT_DIR_ENV, create_run_dir, make_run_id, output_root, resolve_run, validate_run_name

NOW = datetime(2024, 1, 15, 14, 30, 22)


def test_run_id_format():
    assert make_run_id("my_vehicle_detector_v1", NOW) == "20240115_143022_my_vehicle_detector_v1"
    assert re.fullmatch(r"\d{8}_\d{6}_vehicle_detection", make_run_id("vehicle_detection"))


@pytest.mark.parametrize("name", ["a", "exp-1", "exp_1.2", "v1+aug", "A" * 100, "0start"])
def test_safe_names_accepted(name):
    assert validate_run_name(name) == name


@pytest.mark.parametrize("name", [
    "", "a/b", "../x", "..", "a..b", "a\\b", "with space", ".hidden", "-dash", "_under", "a" * 101, "tab\t",
    "new\nline", "x:y", "a*b", "q?", "nul\0", "é", "semi;colon", "$HOME", None, 5,
    "abc\n", "abc\r\n", "\nabc", "abc\n\n", "A" * 100 + "\n",  # `$` would match before a final newline
])
def test_unsafe_names_rejected(name):
    with pytest.raises(UserError, match="invalid run name"):
        validate_run_name(name)


def test_make_run_id_validates_the_name():
    with pytest.raises(UserError, match="invalid run name"):
        make_run_id("../escape", NOW)


def test_create_run_dir(tmp_path):
    run_id, path = create_run_dir("exp", root=tmp_path, now=NOW)
    assert run_id == "20240115_143022_exp"
    assert path == tmp_path.resolve() / run_id and path.is_dir()
    assert list(path.iterdir()) == []


def test_same_second_same_name_gets_suffix(tmp_path):
    ids = [create_run_dir("exp", root=tmp_path, now=NOW)[0] for _ in range(3)]
    assert ids == ["20240115_143022_exp", "20240115_143022_exp-2", "20240115_143022_exp-3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(ids)


def test_existing_folder_is_never_reused(tmp_path):
    taken = tmp_path / "20240115_143022_exp"
    taken.mkdir()
    (taken / "precious.txt").write_text("keep")
    run_id, path = create_run_dir("exp", root=tmp_path, now=NOW)
    assert run_id == "20240115_143022_exp-2"
    assert (taken / "precious.txt").read_text() == "keep"


def test_different_names_or_seconds_do_not_collide(tmp_path):
    a = create_run_dir("exp", root=tmp_path, now=NOW)[0]
    b = create_run_dir("other", root=tmp_path, now=NOW)[0]
    c = create_run_dir("exp", root=tmp_path, now=datetime(2024, 1, 15, 14, 30, 23))[0]
    assert (a, b, c) == ("20240115_143022_exp", "20240115_143022_other", "20240115_143023_exp")


def test_concurrent_creation_gives_distinct_dirs(tmp_path):
    results, barrier = [], threading.Barrier(8)

    def worker():
        barrier.wait()
        results.append(create_run_dir("race", root=tmp_path, now=NOW))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({run_id for run_id, _ in results}) == 8
    assert len(list(tmp_path.iterdir())) == 8


def test_unsafe_name_creates_nothing(tmp_path):
    root = tmp_path / "outputs"
    with pytest.raises(UserError):
        create_run_dir("../evil", root=root, now=NOW)
    assert not root.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_trailing_newline_in_a_run_name_creates_nothing(tmp_path):
    root = tmp_path / "outputs"
    with pytest.raises(UserError, match=r"invalid run name 'abc\\n'"):
        create_run_dir("abc\n", root=root, now=NOW)
    assert not root.exists()


def test_output_root_default_env_explicit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(OUTPUT_DIR_ENV, raising=False)
    assert output_root() == (tmp_path / "outputs").resolve()
    monkeypatch.setenv(OUTPUT_DIR_ENV, str(tmp_path / "exp"))
    assert output_root() == (tmp_path / "exp").resolve()
    monkeypatch.setenv(OUTPUT_DIR_ENV, "rel/dir")
    assert output_root() == (tmp_path / "rel" / "dir").resolve() and output_root().is_absolute()
    assert output_root(tmp_path / "explicit") == (tmp_path / "explicit").resolve()
    monkeypatch.setenv(OUTPUT_DIR_ENV, "")
    assert output_root() == (tmp_path / "outputs").resolve()


def test_create_run_dir_respects_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(OUTPUT_DIR_ENV, str(tmp_path / "experiments"))
    run_id, path = create_run_dir("exp", now=NOW)
    assert path == (tmp_path / "experiments" / run_id).resolve()
    assert not (tmp_path / "outputs").exists()


def test_uncreatable_output_root_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot create output directory"):
        create_run_dir("exp", root=blocker / "sub", now=NOW)


def _make_run(root: Path, run_id: str, files=("config.yaml", "metadata.yaml")) -> Path:
    path = root / run_id
    path.mkdir(parents=True)
    for f in files:
        (path / f).write_text("a: 1\n")
    return path


def test_resolve_run_by_path_and_by_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "outs"
    run = _make_run(root, "20240115_143022_exp")
    assert resolve_run(str(run)) == run.resolve()
    assert resolve_run("20240115_143022_exp", root=root) == run.resolve()
    monkeypatch.setenv(OUTPUT_DIR_ENV, str(root))
    assert resolve_run("20240115_143022_exp") == run.resolve()


def test_resolve_run_unknown(tmp_path):
    with pytest.raises(UserError, match="unknown run 'nope'"):
        resolve_run("nope", root=tmp_path)


def test_resolve_run_not_a_run_dir(tmp_path):
    _make_run(tmp_path, "half", files=("config.yaml",))
    with pytest.raises(UserError, match="not a street-scene run directory: missing metadata.yaml"):
        resolve_run("half", root=tmp_path)


def test_resolve_run_file_is_not_a_run(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="unknown run"):
        resolve_run(str(tmp_path / "afile"), root=tmp_path)
