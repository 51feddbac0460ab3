"""src/common/metadata.py: versions, hardware, git state, command line, metadata.yaml read/update."""

import re
import subprocess
import sys
from importlib import metadata as importlib_metadata

import pytest
import torch

from src.common import metadata as md
from src.common.errors import UserError
from src.common.yaml_io import load_yaml


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false",
                    *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    _git(path, "init", "-q", "-b", "main")
    (path / "train.py").write_text("lr = 0.1\n")
    _git(path, "add", "train.py")
    _git(path, "commit", "-q", "-m", "first")
    return path


def test_package_versions_match_installed():
    versions = md.package_versions()
    assert versions["pytorch_version"] == importlib_metadata.version("torch")
    assert versions["pytorch_version"].split("+")[0] == torch.__version__.split("+")[0]
    assert versions["ultralytics_version"] == importlib_metadata.version("ultralytics")
    assert versions["torchvision_version"] == importlib_metadata.version("torchvision")
    assert versions["numpy_version"] == importlib_metadata.version("numpy")
    assert versions["python_version"] == "{}.{}.{}".format(*sys.version_info[:3])


def test_collect_metadata_has_every_documented_key(monkeypatch, tmp_path, repo):
    monkeypatch.setattr(md, "CODE_ROOT", repo)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["scripts/train.py", "--run-name", "a b"])
    meta, diff = md.collect_metadata(device="cpu", determinism={"deterministic_algorithms": True})
    for key in ("pytorch_version", "torchvision_version", "ultralytics_version", "numpy_version", "python_version",
                "cuda_available", "cuda_version", "cudnn_version", "device", "cpu_model", "num_threads",
                "hostname", "os", "git_commit", "git_branch", "git_dirty", "command", "cwd", "determinism"):
        assert key in meta, key
    assert meta["device"] == "cpu"
    assert meta["cuda_available"] == torch.cuda.is_available()
    assert meta["num_threads"] == torch.get_num_threads()
    assert meta["determinism"] == {"deterministic_algorithms": True}
    assert meta["cwd"] == str(tmp_path)
    assert meta["command"].endswith("scripts/train.py --run-name 'a b'")
    assert re.fullmatch(r"[0-9a-f]{40}", meta["git_commit"])
    assert meta["git_branch"] == "main" and meta["git_dirty"] is False and diff is None
    assert isinstance(meta["cpu_model"], str) and meta["cpu_model"]


def test_collect_metadata_dumps_as_yaml(tmp_path):
    meta, _ = md.collect_metadata(device="cpu", determinism={})
    md.write_metadata(tmp_path, meta)
    assert md.read_metadata(tmp_path) == meta


def test_clean_repo(repo):
    fields, diff = md.git_info(repo)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert fields == {"git_commit": head, "git_branch": "main", "git_dirty": False}
    assert diff is None


def test_dirty_repo_returns_the_diff_and_untracked_names(repo):
    (repo / "train.py").write_text("lr = 0.2\n")
    (repo / "notes.txt").write_text("new\n")
    fields, diff = md.git_info(repo)
    assert fields["git_dirty"] is True
    assert "-lr = 0.1" in diff and "+lr = 0.2" in diff
    assert "# untracked files" in diff and "#   notes.txt" in diff


def test_untracked_only_is_dirty(repo):
    (repo / "extra.py").write_text("x = 1\n")
    fields, diff = md.git_info(repo)
    assert fields["git_dirty"] is True
    assert "#   extra.py" in diff


def test_staged_change_is_in_the_diff(repo):
    (repo / "train.py").write_text("lr = 0.3\n")
    _git(repo, "add", "train.py")
    _, diff = md.git_info(repo)
    assert "+lr = 0.3" in diff


def test_non_utf8_diff_does_not_crash(repo):
    (repo / "train.py").write_bytes(b"name = 'caf\xe9'\n")
    fields, diff = md.git_info(repo)
    assert fields["git_dirty"] is True and "caf" in diff


def test_outside_a_git_repo_says_so(tmp_path):
    fields, diff = md.git_info(tmp_path)
    assert fields["git_commit"] is None and fields["git_dirty"] is None and fields["git_branch"] is None
    assert "not a git repository" in fields["git_note"]
    assert diff is None


def test_repo_without_commits(tmp_path):
    _git(tmp_path, "init", "-q")
    fields, diff = md.git_info(tmp_path)
    assert fields["git_commit"] is None and fields["git_note"] == "git repository without commits"


def test_missing_directory_or_git_binary(tmp_path, monkeypatch):
    assert md.git_info(tmp_path / "does-not-exist")[0]["git_commit"] is None
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on PATH
    fields, diff = md.git_info(tmp_path)
    assert fields["git_commit"] is None and "not a git repository" in fields["git_note"] and diff is None


def test_collect_metadata_outside_git_does_not_fail(monkeypatch, tmp_path):
    monkeypatch.setattr(md, "CODE_ROOT", tmp_path)
    meta, diff = md.collect_metadata(device="cpu", determinism={})
    assert meta["git_commit"] is None and "git_note" in meta and diff is None


def test_environment_lines_look_like_pip_freeze():
    text = md.environment_lines()
    lines = text.splitlines()
    assert text.endswith("\n") and len(lines) > 10
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==\S+", line) for line in lines)
    assert lines == sorted(lines, key=lambda line: line.split("==")[0].lower())
    names = {line.split("==")[0].lower(): line.split("==")[1] for line in lines}
    assert names["torch"] == importlib_metadata.version("torch")
    assert names["pyyaml"] == importlib_metadata.version("PyYAML")
    assert len(names) == len(lines)  # one line per distribution


def test_hardware_info_on_cpu():
    info = md.hardware_info("cpu")
    assert info["device"] == "cpu" and info["cpu_count"] >= 1 and info["hostname"] and info["os"]
    if not torch.cuda.is_available():
        assert info["gpu_names"] == []


def test_now_iso_is_parseable():
    from datetime import datetime

    assert datetime.fromisoformat(md.now_iso())


def test_write_read_update_metadata(tmp_path):
    md.write_metadata(tmp_path, {"run_id": "r", "status": "running", "started_at": md.now_iso()})
    updated = md.update_metadata(tmp_path, status="completed", result={"metrics": {"mAP": 0.5}})
    assert updated["status"] == "completed" and updated["run_id"] == "r"
    on_disk = load_yaml(tmp_path / md.METADATA_FILE)
    assert on_disk == updated
    assert isinstance(on_disk["started_at"], str)  # an ISO time stays a string across a round trip
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_read_metadata_errors(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        md.read_metadata(tmp_path)
    (tmp_path / md.METADATA_FILE).write_text("- a list\n")
    with pytest.raises(UserError, match="not a mapping"):
        md.read_metadata(tmp_path)
