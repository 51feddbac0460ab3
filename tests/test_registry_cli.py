"""`street-scene registry ...`: each subcommand through its parser, plus one real subprocess run."""

import argparse
import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO_ROOT, run_cli, subprocess_env
from src.cli import registry_cmd
from src.common.config_manager import compute_config_hash
from src.common.errors import RegistryCorruptError, UserError
from src.common.model_registry import ModelRegistry, build_entry
from src.common.yaml_io import dump_yaml

TASK = "vehicle_detection"


def cli(*argv) -> int:
    parser = argparse.ArgumentParser(prog="street-scene registry")
    registry_cmd.add_arguments(parser)
    return registry_cmd.run(parser.parse_args([str(a) for a in argv]))


def make_run_dir(root: Path, name: str, metrics: dict, task=TASK, status="completed") -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {"model": {"name": "yolov8n"}, "seed": 42}
    (run_dir / "config.yaml").write_text(dump_yaml(config))
    (run_dir / "best_model.pth").write_bytes(name.encode())
    meta = {"run_id": name, "status": status, "subtask": task, "config_hash": compute_config_hash(config),
            "finished_at": f"2024-01-{name[6:8]}T12:00:00", "pytorch_version": "2.14.1",
            "ultralytics_version": "8.4.190", "git_commit": "abc123"}
    if status == "completed":
        meta["result"] = {"checkpoint": "best_model.pth", "metrics": metrics,
                          "checkpoint_sha256": hashlib.sha256(name.encode()).hexdigest()}
    (run_dir / "metadata.yaml").write_text(dump_yaml(meta))
    return run_dir


@pytest.fixture
def trained(isolated_env):
    """Three completed runs registered as training does (registry and outputs from isolated_env)."""
    outputs = isolated_env / "outputs"
    registry = ModelRegistry()
    for name, task, score in [("20240101_000000_a", TASK, 0.4), ("20240102_000000_b", TASK, 0.9),
                              ("20240103_000000_c", "pedestrian_detection", 0.7)]:
        registry.register(build_entry(make_run_dir(outputs, name, {"best_val_metric": score, "loss": 1 - score},
                                                   task=task)))
    return registry


def test_help_and_module_contract():
    assert isinstance(registry_cmd.HELP, str) and registry_cmd.HELP
    parser = argparse.ArgumentParser()
    registry_cmd.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args([])  # a subcommand is required


@pytest.mark.slow
def test_importing_the_command_is_light():
    code = ("import sys, src.cli.registry_cmd; heavy = {'torch', 'numpy', 'ultralytics', 'yaml', 'filelock'} & "
            "set(sys.modules); assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=subprocess_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_list_table_filter_and_sort(trained, capsys):
    assert cli("list") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["RUN_ID", "TASK", "STATUS", "FINISHED", "CONFIG", "METRICS"]
    assert all(f"20240{i}" in out for i in range(101, 104)) and "3 entries in" in out

    assert cli("list", "--task", TASK, "--sort", "best_val_metric") == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:-1]]
    assert rows == ["20240102_000000_b", "20240101_000000_a"]

    assert cli("list", "--sort", "loss", "--mode", "min") == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:-1]]
    assert rows == ["20240102_000000_b", "20240103_000000_c", "20240101_000000_a"]


def test_list_json_is_the_registry(trained, capsys):
    assert cli("list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == trained.list_entries()


def test_list_of_an_empty_registry(isolated_env, capsys):
    assert cli("list") == 0
    assert "no entries" in capsys.readouterr().out


def test_any_task_name_is_accepted(trained, capsys):
    """Tasks are subtask names from configs; the CLI keeps no list of them."""
    assert cli("list", "--task", "cars") == 0
    out = capsys.readouterr().out
    assert "no entries in" in out and "for task cars" in out
    assert cli("best", "--task", "new_subtask.v2", "--metric", "best_val_metric") == 1
    assert "no new_subtask.v2 entry" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["list", "best"])
@pytest.mark.parametrize("task", ["", "a/b", "vehicle_detection\n", "two words"])
def test_malformed_task_name_is_one_user_error(trained, command, task):
    extra = ["--metric", "best_val_metric"] if command == "best" else []
    with pytest.raises(UserError, match=f"registry {command}: invalid task name"):
        cli(command, "--task", task, *extra)


def test_remove_of_an_empty_run_id_is_a_user_error(trained):
    with pytest.raises(UserError, match="registry remove: run_id must be a non-empty string"):
        cli("remove", "")
    assert len(trained) == 3


def test_export_refuses_a_folder_and_a_missing_folder(trained, tmp_path):
    with pytest.raises(UserError, match="it is a folder"):
        cli("export", "--csv", tmp_path)
    with pytest.raises(UserError, match=r"the folder \S*nonexistent_dir does not exist"):
        cli("export", "--csv", tmp_path / "nonexistent_dir" / "x.csv")
    assert not (tmp_path / "nonexistent_dir").exists()


def test_verify_reports_a_non_string_sha256_instead_of_crashing(trained, capsys):
    text = trained.path.read_text()
    sha = trained.get_entry("20240101_000000_a")["checkpoint_sha256"]
    trained.path.write_text(text.replace(f'"{sha}"', "12345"))
    assert cli("verify") == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("20240101_000000_a"))
    assert "invalid checkpoint_sha256 12345" in row and row.endswith("PROBLEM")
    assert "2 of 3 entries ok, 1 with problems" in out


def test_remove_after_a_nan_literal_is_a_corrupt_registry_not_a_crash(trained, isolated_env, capsys):
    trained.path.write_text(trained.path.read_text().replace('"loss": 0.6', '"loss": NaN', 1))
    before = trained.path.read_bytes()
    with pytest.raises(RegistryCorruptError, match="non-standard JSON constant NaN"):
        cli("remove", "20240101_000000_a")
    assert trained.path.read_bytes() == before
    assert cli("rebuild") == 0
    assert "moved the corrupt registry aside" in capsys.readouterr().out
    assert cli("remove", "20240101_000000_a") == 0


def test_best(trained, capsys):
    assert cli("best", "--task", TASK, "--metric", "best_val_metric") == 0
    out = capsys.readouterr().out
    assert "20240102_000000_b" in out and "best_model.pth" in out
    assert cli("best", "--task", TASK, "--metric", "loss", "--mode", "min", "--json") == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == "20240102_000000_b"
    assert cli("best", "--task", TASK, "--metric", "mAP") == 1
    assert "no vehicle_detection entry" in capsys.readouterr().err
    with pytest.raises(UserError, match="metric_name"):
        cli("best", "--task", TASK, "--metric", "")


def test_export(trained, tmp_path, capsys):
    out = tmp_path / "reg.csv"
    assert cli("export", "--csv", out) == 0
    assert "exported 3 entries" in capsys.readouterr().out
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["metrics.best_val_metric"] for r in rows] == ["0.4", "0.9", "0.7"]


def test_remove(trained, capsys):
    assert cli("remove", "20240101_000000_a") == 0
    assert trained.get_entry("20240101_000000_a") is None and len(trained) == 2
    with pytest.raises(UserError, match="not in registry"):
        cli("remove", "20240101_000000_a")


def test_corrupt_registry_then_rebuild(trained, isolated_env, capsys):
    registered = trained.list_entries()
    make_run_dir(isolated_env / "outputs", "20240104_000000_crashed", {}, status="failed")
    trained.path.write_text("[{")
    with pytest.raises(RegistryCorruptError, match="registry rebuild"):
        cli("list")
    assert cli("rebuild", "--outputs", isolated_env / "outputs") == 0
    out = capsys.readouterr().out
    assert "moved the corrupt registry aside" in out and "skipped 20240104_000000_crashed" in out
    assert "rebuilt" in out and "3 entries" in out
    assert ModelRegistry().list_entries() == registered


def test_verify_exit_codes(trained, capsys):
    assert cli("verify") == 0
    assert "3 of 3 entries ok" in capsys.readouterr().out
    Path(trained.get_entry("20240101_000000_a")["checkpoint_path"]).write_bytes(b"changed")
    assert cli("verify") == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["RUN_ID", "CHECKPOINT", "SHA256", "CONFIG_HASH", "RESULT"]
    assert "PROBLEM" in out and "2 of 3 entries ok, 1 with problems" in out


def test_registry_option_overrides_the_default(trained, tmp_path, capsys):
    other = tmp_path / "other.json"
    ModelRegistry(other).register(trained.get_entry("20240102_000000_b"))
    assert cli("list", "--json", "--registry", other) == 0
    assert [e["run_id"] for e in json.loads(capsys.readouterr().out)] == ["20240102_000000_b"]


@pytest.mark.slow
def test_street_scene_registry_command(trained, isolated_env):
    env = {"STREET_SCENE_REGISTRY": str(trained.path)}
    proc = run_cli("registry", "list", "--task", TASK, cwd=isolated_env, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "20240101_000000_a" in proc.stdout and "20240103_000000_c" not in proc.stdout
    trained.path.write_text("not json")
    proc = run_cli("registry", "best", "--task", TASK, "--metric", "loss", cwd=isolated_env, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: registry ") and "rebuild" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_rebuild_reports_stale_and_empty_run_directories(trained, isolated_env, capsys):
    outputs = isolated_env / "outputs"
    stale = make_run_dir(outputs, "20240104_000000_dead", {}, status="running")  # nobody holds its lock
    (outputs / "20240105_000000_empty").mkdir()  # killed before it wrote metadata.yaml
    assert cli("rebuild") == 0
    out = capsys.readouterr().out.splitlines()
    assert f"skipped {stale.name}: stale: its process died; run `street-scene runs finalize {stale.name}`" in out
    assert "skipped 20240105_000000_empty: empty (killed before it recorded anything); nothing to keep, delete it" \
        in out
    assert out[-1].endswith("3 entries from " + str(outputs) + ", 2 run directories skipped")


def test_runs_lists_states_and_finalize_marks_an_unfinished_stale_run_failed(trained, isolated_env, capsys):
    from src.cli import runs_cmd
    from src.common.metadata import read_metadata

    outputs = isolated_env / "outputs"
    dead = make_run_dir(outputs, "20240104_000000_dead", {}, status="running")
    parser = argparse.ArgumentParser(prog="street-scene runs")
    runs_cmd.add_arguments(parser)
    assert runs_cmd.run(parser.parse_args(["--json"])) == 0
    states = {s["run_id"]: s["status"] for s in json.loads(capsys.readouterr().out)}
    assert states == {"20240101_000000_a": "completed", "20240102_000000_b": "completed",
                      "20240103_000000_c": "completed", dead.name: "stale"}
    (dead / ".metadata.yaml.123.tmp").write_text("half")  # a killed writer's temp file
    assert runs_cmd.run(parser.parse_args(["finalize", dead.name])) == 0
    meta = read_metadata(dead)
    assert meta["status"] == "failed" and "died after epoch 0 without finishing" in meta["error"]
    assert not list(dead.glob(".*.tmp"))
    with pytest.raises(UserError, match="is failed; only a stale run"):
        runs_cmd.run(parser.parse_args(["finalize", dead.name]))


@pytest.mark.slow
def test_a_command_builds_only_its_own_parser():
    """`street-scene registry ...` imports no other command (all fifteen cost ~50 ms of every call)."""
    code = ("import sys\nfrom src.cli.main import main\nrc = main(sys.argv[1:])\n"
            "print(sorted(m for m in sys.modules if m.startswith('src.cli.') and m.endswith('_cmd')))\n")
    proc = subprocess.run([sys.executable, "-c", code, "registry", "list", "--registry", "none.json"], cwd=REPO_ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "['src.cli.registry_cmd']"


def test_metrics_column_is_cut_to_one_short_line(trained, capsys):
    registry = ModelRegistry()
    entry = registry.get_entry("20240101_000000_a")
    entry.update(run_id="wide", metrics={f"metric_{i}": i / 3 for i in range(10)})
    registry.register(entry)
    assert cli("list", "--task", TASK) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("wide "))
    column = row.split("  ")[-1]
    assert column == "metric_0=0 metric_1=0.3333 metric_2=0.6667 metric_3=1 met..."
    assert len(column) == 60


@pytest.mark.slow
def test_output_cut_short_by_the_reader_ends_quietly(trained, isolated_env):
    """`street-scene registry list | head`: no `error: Broken pipe` line, the shell's SIGPIPE status."""
    registry = ModelRegistry()
    template = registry.get_entry("20240101_000000_a")
    registry.register_many([{**template, "run_id": f"many_{i:04d}"} for i in range(2000)])  # > a pipe's 64 KiB
    proc = subprocess.Popen([sys.executable, "-m", "src.cli.main", "registry", "list"], cwd=REPO_ROOT,
                            env=subprocess_env({"STREET_SCENE_REGISTRY": str(registry.path)}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().split()[0] == b"RUN_ID"
    proc.stdout.close()
    assert proc.wait(timeout=60) == 141
    assert proc.stderr.read() == b""
