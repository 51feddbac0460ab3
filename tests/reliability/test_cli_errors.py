"""Operating-system refusals and bad registry arguments at the command line: one `error:` line, exit 2.

Tests run as root, where permission bits do not stop anything; the real refusals used here are a regular file
where a folder should be (ENOTDIR / EEXIST) and a folder where a file should be (EISDIR). Other errnos are
checked through `run_command` directly. STREET_SCENE_DEBUG=1 adds the traceback for both kinds of error.
"""

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest

from src.common.error_lines import DEBUG_ENV, run_command
from src.common.config_manager import compute_config_hash
from src.common.errors import UserError
from src.common.model_registry import ModelRegistry, build_entry
from src.common.yaml_io import dump_yaml
from tests.helpers import run_cli

TASK = "vehicle_detection"


def _raise(exc):
    def command(args):
        raise exc

    return command


@pytest.mark.parametrize("code, hint", [
    (errno.ENOSPC, "the disk is full"),
    (errno.EROFS, "the file system is read-only"),
    (errno.EACCES, "check the permissions"),
    (errno.EPERM, "check the permissions"),
    (errno.EISDIR, "a folder is where a file was expected"),
    (errno.ENOTDIR, "a part of the path is a file, not a folder"),
    (errno.ENOENT, "check that the path exists"),
    (errno.EEXIST, "something already exists at that path"),
    (errno.EIO, f"set {DEBUG_ENV}=1 for the full traceback"),
])
def test_os_errors_become_one_line(code, hint, capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    exc = OSError(code, os.strerror(code), "/data/registry/model_registry.json")
    assert run_command(_raise(exc), None) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: cannot access /data/registry/model_registry.json: {os.strerror(code)}; "
                                   f"{hint}")
    assert captured.err.count("\n") == 1 and captured.err.endswith("\n")


def test_os_error_line_variants(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    cases = [
        (OSError(errno.EXDEV, "Invalid cross-device link", "/a/src", None, "/b/dst"),
         "error: cannot access /a/src -> /b/dst: Invalid cross-device link; "),
        (OSError(errno.ENOSPC, "No space left on device"), "error: No space left on device; the disk is full"),
        (OSError(errno.EBADF, "Bad file descriptor", 7), "error: cannot access 7: Bad file descriptor; "),
        (OSError(errno.ENOENT, "No such file or directory", "/x/new\nline"),
         "error: cannot access /x/new line: No such file or directory; "),
        (OSError("no errno at all"), "error: no errno at all; "),
    ]
    for exc, start in cases:
        assert run_command(_raise(exc), None) == 2
        err = capsys.readouterr().err
        assert err.startswith(start) and err.count("\n") == 1, err


@pytest.mark.parametrize("exc, line", [
    (OSError(errno.ENOSPC, "No space left on device", "/tmp/x"),
     "error: cannot access /tmp/x: No space left on device; the disk is full; free some space and retry"),
    (UserError("bad input; fix it"), "error: bad input; fix it"),
])
def test_debug_env_adds_the_traceback(exc, line, capsys, monkeypatch):
    monkeypatch.setenv(DEBUG_ENV, "1")
    assert run_command(_raise(exc), None) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.splitlines()[-1] == line
    monkeypatch.setenv(DEBUG_ENV, "0")
    assert run_command(_raise(exc), None) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_bug_still_shows_its_traceback():
    with pytest.raises(ZeroDivisionError):  # only expected errors are turned into one line
        run_command(lambda args: 1 / 0, None)


# ---- through the real command ---------------------------------------------------------------------------------
def _run_dir(outputs: Path, name: str) -> Path:
    run_dir = outputs / name
    run_dir.mkdir(parents=True)
    config = {"model": {"name": "yolov8n"}, "seed": 42}
    (run_dir / "config.yaml").write_text(dump_yaml(config))
    (run_dir / "best_model.pth").write_bytes(name.encode())
    meta = {"run_id": name, "status": "completed", "subtask": TASK, "config_hash": compute_config_hash(config),
            "finished_at": "2024-01-01T12:00:00", "pytorch_version": "2.14.1", "ultralytics_version": "8.4.190",
            "git_commit": "abc123", "result": {"checkpoint": "best_model.pth", "metrics": {"best_val_metric": 0.5},
                                               "checkpoint_sha256": hashlib.sha256(name.encode()).hexdigest()}}
    (run_dir / "metadata.yaml").write_text(dump_yaml(meta))
    return run_dir


@pytest.fixture
def ws(tmp_path):
    """A registry with one entry, and a regular file to put where folders belong."""
    registry = ModelRegistry(tmp_path / "registry" / "model_registry.json")
    registry.register(build_entry(_run_dir(tmp_path / "outputs", "20240101_000000_a")))
    (tmp_path / "afile").write_text("a regular file")
    return tmp_path


def _cli(ws: Path, *args, debug=False):
    env = {"STREET_SCENE_REGISTRY": str(ws / "registry" / "model_registry.json"),
           "STREET_SCENE_OUTPUT_DIR": str(ws / "outputs"), DEBUG_ENV: "1" if debug else ""}
    return run_cli(*args, cwd=ws, env=env, timeout=120)


def _one_error_line(proc, starts: str) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), proc.stderr
    return lines[0]


@pytest.mark.slow
def test_make_dataset_under_a_file_is_one_line_and_debug_shows_the_traceback(ws):
    out = ws / "afile" / "sub" / "data"
    line = _one_error_line(_cli(ws, "make-dataset", "--task", "vehicle_detection", "--out", out),
                           f"error: cannot access {ws / 'afile' / 'sub'}: Not a directory; ")
    assert "a part of the path is a file, not a folder" in line
    proc = _cli(ws, "make-dataset", "--task", "vehicle_detection", "--out", out, debug=True)
    assert proc.returncode == 2 and "Traceback (most recent call last):" in proc.stderr
    assert proc.stderr.splitlines()[-1] == line
    assert (ws / "afile").read_text() == "a regular file"


@pytest.mark.slow
def test_registry_paths_blocked_by_files_and_folders(ws):
    blocked = ws / "afile" / "sub" / "model_registry.json"
    line = _one_error_line(_cli(ws, "registry", "list", "--registry", blocked), f"error: cannot read registry {blocked}")
    assert "Not a directory" in line
    _one_error_line(_cli(ws, "registry", "rebuild", "--registry", blocked), f"error: cannot read registry {blocked}")
    line = _one_error_line(_cli(ws, "registry", "remove", "x", "--registry", ws / "outputs"),
                           f"error: cannot read registry {ws / 'outputs'}: Is a directory")
    assert [p.name for p in (ws / "outputs").iterdir()] == ["20240101_000000_a"]


@pytest.mark.slow
def test_registry_arguments_are_one_line(ws):
    _one_error_line(_cli(ws, "registry", "remove", ""), "error: registry remove: run_id must be a non-empty string")
    _one_error_line(_cli(ws, "registry", "export", "--csv", ws), f"error: cannot export the registry to {ws}: "
                                                                 "it is a folder")
    _one_error_line(_cli(ws, "registry", "export", "--csv", ws / "nonexistent_dir" / "x.csv"),
                    f"error: cannot export the registry to {ws / 'nonexistent_dir' / 'x.csv'}: the folder "
                    f"{ws / 'nonexistent_dir'} does not exist")
    assert not (ws / "nonexistent_dir").exists()
    _one_error_line(_cli(ws, "registry", "export", "--csv", ws / "afile" / "x.csv"),
                    f"error: cannot export the registry to {ws / 'afile' / 'x.csv'}: the folder {ws / 'afile'} "
                    "is a file, not a folder")
    _one_error_line(_cli(ws, "registry", "list", "--task", "a/b"), "error: registry list: invalid task name 'a/b'")
    _one_error_line(_cli(ws, "registry", "best", "--task", "", "--metric", "m"),
                    "error: registry best: invalid task name ''")


@pytest.mark.slow
def test_any_task_name_and_a_bad_sha256_through_the_command(ws):
    proc = _cli(ws, "registry", "list", "--task", "brand_new_subtask")
    assert proc.returncode == 0 and "no entries" in proc.stdout and proc.stderr == ""
    reg = ws / "registry" / "model_registry.json"
    data = json.loads(reg.read_text())
    data[0]["checkpoint_sha256"] = 12345
    reg.write_text(json.dumps(data))
    proc = _cli(ws, "registry", "verify")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "invalid checkpoint_sha256 12345" in proc.stdout and "PROBLEM" in proc.stdout


# ---- the root cause of `export --csv /nonexistent_dir/x.csv` creating /nonexistent_dir -------------------------
def test_atomic_writes_never_create_folders_and_name_the_target(tmp_path):
    from src.common.atomic import atomic_write_bytes, atomic_write_text

    target = tmp_path / "missing" / "deeper" / "x.csv"
    with pytest.raises(FileNotFoundError) as info:
        atomic_write_text(target, "a,b\n")
    assert info.value.filename == str(target)  # not the hidden temp file's name
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError) as info:
        atomic_write_bytes(tmp_path / "afile" / "x.bin", b"")
    assert info.value.filename == str(tmp_path / "afile" / "x.bin")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "keep").write_text("user data")
    with pytest.raises(IsADirectoryError) as info:
        atomic_write_bytes(tmp_path / "folder", b"replace a folder?")
    assert info.value.filename == str(tmp_path / "folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder"]  # no temp files left behind
    assert (tmp_path / "folder" / "keep").read_text() == "user data"


def test_a_registry_folder_that_cannot_be_created_is_one_line(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    registry = ModelRegistry(tmp_path / "ro" / "registry" / "model_registry.json")
    with pytest.raises(UserError, match=r"cannot create the registry folder .*/ro/registry: Read-only file system; "
                                        "pass --registry"):
        registry.register({"run_id": "a", "task": TASK, "config_hash": "abc", "checkpoint_path": "/x.pth"})
