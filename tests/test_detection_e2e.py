"""Detection end to end: the README's train command from the repo root, the three data spellings,
offline training that writes only into its run dir, the seed variables, and a failed run.

Two 1-epoch trainings on the same 6 images are shared by the module: one started from the repo root exactly as
the README writes it, one from a tmp cwd under a socket logger with ultralytics' own variables unset.
"""

import os
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import pytest

from tests.detection_e2e_support import (CONFIG, IMGSZ_64, NO_PLOTS, RUN_ID_RE, TRAIN_SECTION, VEHICLE_CLASSES,
                                         VEHICLE_YAML, completion_lines, image_list, load_yaml, make_data,
                                         registry_entries, ultralytics_layout, weights_sha, workspace_env)
from tests.helpers import REPO_ROOT, run_script, subprocess_env

pytestmark = pytest.mark.slow  # trains models in subprocesses

ONE_EPOCH = [IMGSZ_64, "detection.training.epochs=1", "detection.training.batch_size=4", *NO_PLOTS]
# Records every non-loopback DNS lookup / connect of the script it runs (then lets tests/netblock refuse it).
NETLOG_SHIM = textwrap.dedent("""
    import os, runpy, socket, sys

    LOG = os.environ["NETLOG_FILE"]
    LOCAL = ("localhost", "127.0.0.1", "::1", "", None)

    def _log(what):
        with open(LOG, "a") as f:
            f.write(what + "\\n")

    _getaddrinfo, _connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *a, **k):
        if host not in LOCAL:
            _log(f"dns {host}")
        return _getaddrinfo(host, *a, **k)

    def connect(self, address, *a):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOCAL:
            _log(f"connect {address}")
        return _connect(self, address, *a)

    socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
""")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The same 6/4/4 images as a make-dataset folder, an ultralytics images/<split> tree and .txt lists."""
    root = tmp_path_factory.mktemp("e2e_data")
    make_data(root / "scenes", n_train=6, n_val=4, n_test=4, seed=1)
    ultralytics_layout(root / "scenes", root / "yolo")
    # ultralytics' usual list form, `./images/...` relative to the list (used by the trainings) ...
    listed = [f"./images/{p.name}" for p in sorted((root / "scenes" / "train" / "images").glob("*.jpg"))]
    (root / "scenes" / "train" / "train.txt").write_text("\n".join(listed) + "\n")
    # ... and plain relative paths, which street-scene documents as relative to the .txt file's folder
    image_list(root / "scenes" / "train" / "images", root / "lists" / "train.txt")
    return root


def _spellings(data):
    return {"folder": data / "scenes" / "train", "images_dir": data / "yolo" / "images" / "train",
            "list": data / "scenes" / "train" / "train.txt"}


def _tree(root: Path) -> dict:
    """{relative path: mtime_ns} of every file under root (empty when root is missing)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            try:
                out[str(path.relative_to(root))] = path.stat().st_mtime_ns
            except FileNotFoundError:
                continue  # another process's temp file vanished while we listed
    return out


def _changed(before: dict, after: dict) -> set:
    return {p for p, mtime in after.items() if before.get(p) != mtime}


@pytest.fixture(scope="module")
def repo_root_run(data, tmp_path_factory):
    """The README's command typed at the repo root; outputs and registry redirected by the documented variables."""
    ws = tmp_path_factory.mktemp("from_repo_root")
    argv = [sys.executable, "scripts/train.py", "--config", "configs/detection_config.yaml", "--task", "detection",
            "--detection-task", "vehicle_detection", "--train-data", data / "scenes" / "train" / "train.txt",
            "--val-data", data / "yolo" / "images" / "val", "--data-yaml", "configs/datasets/vehicle_detection.yaml",
            "--run-name", "from_repo_root", *[a for o in ONE_EPOCH for a in ("--config-override", o)]]
    repo_before = {p.name for p in REPO_ROOT.iterdir()}
    proc = subprocess.run([str(a) for a in argv], cwd=REPO_ROOT, env=subprocess_env(workspace_env(ws)),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved_to, run_id = completion_lines(proc.stdout)
    return {"ws": ws, "proc": proc, "saved_to": saved_to, "run_id": run_id, "run_dir": ws / "outputs" / run_id,
            "repo_before": repo_before}


@pytest.fixture(scope="module")
def offline_run(data, repo_root_run, tmp_path_factory):
    """Same data and config from a tmp cwd; no YOLO_* variables, HOME/TMPDIR in the tmp dir, sockets logged.

    STREET_SCENE_SEED=123 and --seed 7: the flag must win.
    """
    ws = tmp_path_factory.mktemp("offline")
    (ws / "home").mkdir()
    (ws / "tmp").mkdir()
    (ws / "shim.py").write_text(NETLOG_SHIM)
    env = subprocess_env(workspace_env(ws, STREET_SCENE_SEED="123", HOME=str(ws / "home"), TMPDIR=str(ws / "tmp"),
                                       NETLOG_FILE=str(ws / "netlog.txt")))
    for var in ("YOLO_OFFLINE", "YOLO_AUTOINSTALL", "YOLO_CONFIG_DIR", "MPLCONFIGDIR", "XDG_CONFIG_HOME",
                "XDG_CACHE_HOME"):
        env.pop(var, None)  # the product must set ultralytics up by itself
    site = Path(sysconfig.get_paths()["purelib"])
    before = {"site": _tree(site), "tests": _tree(REPO_ROOT / "tests"), "data": _tree(data)}
    argv = [sys.executable, ws / "shim.py", REPO_ROOT / "scripts" / "train.py", "--config", CONFIG, *TRAIN_SECTION,
            "--train-data", data / "scenes" / "train" / "train.txt", "--val-data", data / "yolo" / "images" / "val",
            "--data-yaml", VEHICLE_YAML, "--run-name", "offline", "--seed", "7",
            *[a for o in ONE_EPOCH for a in ("--config-override", o)]]
    proc = subprocess.run([str(a) for a in argv], cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = {"site": _tree(site), "tests": _tree(REPO_ROOT / "tests"), "data": _tree(data)}
    saved_to, run_id = completion_lines(proc.stdout)
    return {"ws": ws, "proc": proc, "saved_to": saved_to, "run_id": run_id, "run_dir": ws / "outputs" / run_id,
            "changed": {k: _changed(before[k], after[k]) for k in before}}


# ---------------------------------------------------------------- the README's command from the repo root


def test_guide_command_from_repo_root(repo_root_run):
    run_dir, run_id = repo_root_run["run_dir"], repo_root_run["run_id"]
    assert RUN_ID_RE.fullmatch(run_id).group(2) == "from_repo_root"
    # outputs/ is outside the cwd here, so the path printed is the absolute one
    assert repo_root_run["saved_to"] == str(run_dir.resolve())
    assert (run_dir / "best_model.pth").is_file()
    [entry] = registry_entries(repo_root_run["ws"])
    assert entry["run_id"] == run_id and entry["task"] == "vehicle_detection"
    meta = load_yaml(run_dir / "metadata.yaml")
    assert Path(meta["cwd"]) == REPO_ROOT
    # nothing landed in the checkout: no runs/ (ultralytics' default), outputs/ or registry/ (ours)
    for name in ("runs", "outputs", "registry"):
        assert name in repo_root_run["repo_before"] or not (REPO_ROOT / name).exists(), name
    assert not (REPO_ROOT / "runs").exists()
    assert list(REPO_ROOT.glob("outputs/*from_repo_root*")) == []


def test_txt_list_and_images_dir_spellings_train(repo_root_run, data):
    run_dir = repo_root_run["run_dir"]
    meta = load_yaml(run_dir / "metadata.yaml")
    train_list = (data / "scenes" / "train" / "train.txt").resolve()
    assert Path(meta["data"]["train"]) == train_list
    assert Path(meta["data"]["val"]) == (data / "yolo" / "images" / "val").resolve()
    assert meta["data"]["stats"]["train"]["images"] == 6 and meta["data"]["stats"]["val"]["images"] == 4
    effective = load_yaml(run_dir / "data.yaml")
    assert effective["names"] == dict(enumerate(VEHICLE_CLASSES)) and effective["nc"] == 5
    assert (Path(effective["train"]), Path(effective["val"])) == (train_list, Path(meta["data"]["val"]))
    assert "6 images" in (run_dir / "train.log").read_text()  # ultralytics found all of them through the list


def test_all_three_spellings_resolve_to_the_same_images(data, monkeypatch, tmp_path):
    from src.common.config_manager import ConfigManager
    from src.tasks.detection.task import prepare_train

    monkeypatch.setenv("STREET_SCENE_CACHE", str(tmp_path / "cache"))
    config = ConfigManager(CONFIG).get_config()
    val = data / "scenes" / "val"
    seen = {}
    for kind, spec in _spellings(data).items():
        prepared = prepare_train(config, "vehicle_detection", str(spec), str(val), str(VEHICLE_YAML))
        assert prepared.splits["train"].kind == kind
        seen[kind] = sorted(p.name for p in prepared.splits["train"].images)
        assert prepared.record["stats"]["train"]["images"] == 6
    assert seen["folder"] == seen["images_dir"] == seen["list"] and len(seen["folder"]) == 6


def test_txt_list_paths_are_relative_to_the_list_file(data, monkeypatch, tmp_path):
    from src.common.config_manager import ConfigManager
    from src.tasks.detection.task import prepare_train

    monkeypatch.setenv("STREET_SCENE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # any cwd: the entries are relative to lists/, not to it
    assert (data / "lists" / "train.txt").read_text().startswith("../scenes/train/images/")
    prepared = prepare_train(ConfigManager(CONFIG).get_config(), "vehicle_detection", str(data / "lists" / "train.txt"),
                             str(data / "scenes" / "val"), str(VEHICLE_YAML))
    assert prepared.record["stats"]["train"]["images"] == 6
    assert prepared.fingerprints["train"]["files"] == 12  # 6 images + 6 labels


def test_evaluate_accepts_an_images_split_folder(repo_root_run, data):
    import json

    ws, run_dir = repo_root_run["ws"], repo_root_run["run_dir"]
    proc = run_script("evaluate.py", "--config", run_dir / "config.yaml", *TRAIN_SECTION,
                      "--test-data", data / "yolo" / "images" / "test", "--checkpoint", run_dir / "best_model.pth",
                      "--data-yaml", VEHICLE_YAML, "--verify-config", "--json", cwd=ws, env=workspace_env(ws))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert set(result["per_class"]) == set(VEHICLE_CLASSES)
    assert set(result["metrics"]) == {"test/mAP50", "test/mAP50-95", "test/precision", "test/recall"}
    [saved] = (run_dir / "evaluations").glob("*.json")
    record = json.loads(saved.read_text())
    assert Path(record["test_data"]["test"]) == (data / "yolo" / "images" / "test").resolve()
    assert record["test_data"]["stats"]["images"] == 4


# ---------------------------------------------------------------- offline, and files only in the run dir


def test_network_logger_records_attempts(tmp_path):
    """The control for the next test: the shim does log a lookup (tests/netblock then refuses it)."""
    (tmp_path / "shim.py").write_text(NETLOG_SHIM)
    (tmp_path / "probe.py").write_text("import socket\ntry:\n    socket.getaddrinfo('example.com', 443)\n"
                                       "except Exception as e:\n    print(type(e).__name__)\n")
    env = subprocess_env({"NETLOG_FILE": str(tmp_path / "netlog.txt")})
    proc = subprocess.run([sys.executable, str(tmp_path / "shim.py"), str(tmp_path / "probe.py")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "NetworkBlocked", proc.stderr
    assert (tmp_path / "netlog.txt").read_text() == "dns example.com\n"


def test_training_makes_no_network_attempt(offline_run):
    log = offline_run["ws"] / "netlog.txt"
    assert not log.exists() or log.read_text() == ""


def test_ultralytics_writes_only_into_the_run_dir(offline_run):
    ws, run_dir = offline_run["ws"], offline_run["run_dir"]
    assert (run_dir / "ultralytics" / "results.csv").is_file()  # its own files: inside the run dir
    assert not (ws / "runs").exists() and not (REPO_ROOT / "runs").exists()
    allowed_roots = (run_dir, ws / "registry", ws / "cache", ws / "home" / ".cache" / "matplotlib",
                     ws / "home" / ".config" / "matplotlib")
    stray = [p for p in ws.rglob("*") if p.is_file() and p.name not in ("shim.py", "netlog.txt")
             and not any(p.is_relative_to(root) for root in allowed_roots)]
    assert stray == []
    # the cache holds ultralytics' settings and font (documented) and our fingerprint cache, nothing else
    cached = {str(p.relative_to(ws / "cache")) for p in (ws / "cache").rglob("*") if p.is_file()}
    assert all(c.startswith("ultralytics/") or c == "fingerprints.json" for c in cached), cached
    assert not any("ultralytics" in str(p).lower() for p in (ws / "home").rglob("*"))
    assert [p for p in (ws / "tmp").rglob("*") if p.is_file()] == []  # (torch leaves an empty torchinductor_<user>/)
    changed = offline_run["changed"]
    assert changed["site"] == set(), sorted(changed["site"])[:10]
    assert {p for p in changed["tests"] if "__pycache__" not in p and not p.endswith(".py")} == set()
    # ultralytics' label caches beside the labels folders are the one documented write outside the run dir
    assert all(p.endswith(".cache") for p in changed["data"]), changed["data"]


def test_cli_seed_beats_env_seed_and_changes_the_weights(offline_run, repo_root_run):
    meta = load_yaml(offline_run["run_dir"] / "metadata.yaml")
    assert (meta["seed"], meta["seed_source"]) == (7, "cli")
    assert load_yaml(offline_run["run_dir"] / "config.yaml")["seed"] == 7
    base = load_yaml(repo_root_run["run_dir"] / "metadata.yaml")
    assert (base["seed"], base["seed_source"]) == (42, "config")
    assert meta["config_hash"] != base["config_hash"]  # the seed is part of the hash
    assert weights_sha(offline_run["run_dir"] / "best_model.pth") != weights_sha(
        repo_root_run["run_dir"] / "best_model.pth")


def test_output_and_registry_variables_are_honoured(offline_run):
    ws = offline_run["ws"]
    assert offline_run["saved_to"] == f"outputs/{offline_run['run_id']}"  # under the cwd: printed relative
    assert offline_run["run_dir"].parent == ws / "outputs"
    assert [e["run_id"] for e in registry_entries(ws)] == [offline_run["run_id"]]


# ---------------------------------------------------------------- a run that fails after its run dir exists


def test_interrupted_run_is_marked_failed_and_not_registered(data, tmp_path):
    """Ctrl-C during training: exit 130, run dir kept with status failed, nothing registered; the env seed counts."""
    argv = [sys.executable, REPO_ROOT / "scripts" / "train.py", "--config", CONFIG, *TRAIN_SECTION,
            "--train-data", data / "scenes" / "train", "--val-data", data / "scenes" / "val",
            "--data-yaml", VEHICLE_YAML, "--run-name", "interrupted", "--config-override", IMGSZ_64,
            "--config-override", "detection.training.epochs=20", "--config-override", NO_PLOTS[0]]
    env = subprocess_env(workspace_env(tmp_path, STREET_SCENE_SEED="123"))
    proc = subprocess.Popen([str(a) for a in argv], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            logs = list((tmp_path / "outputs").glob("*/train.log"))
            if logs and "Starting training" in logs[0].read_text(errors="replace"):
                break
            time.sleep(0.1)
        assert proc.poll() is None, "training ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr[-3000:]
    assert stderr.splitlines()[-1] == "interrupted" and "Training completed" not in stdout
    [run_dir] = (tmp_path / "outputs").iterdir()
    meta = load_yaml(run_dir / "metadata.yaml")
    assert (meta["status"], meta["error"]) == ("failed", "interrupted by SIGINT") and meta["finished_at"]
    assert (meta["seed"], meta["seed_source"]) == (123, "env")
    assert load_yaml(run_dir / "config.yaml")["seed"] == 123
    assert not (run_dir / "best_model.pth").exists()
    assert registry_entries(tmp_path) == []


# ---------------------------------------------------------------- training curves


def test_training_curves_are_drawn_from_metrics_csv_with_its_names(data, repo_root_run, tmp_path):
    """plots on or off, training_curves.png is ours, drawn from metrics.csv (so its curves carry the names every
    other output uses), never ultralytics' results.png with its `metrics/mAP50(B)` labels."""
    from src.common.curves import curve_labels
    from src.common.run_dir import read_metrics_csv

    proc = run_script("train.py", "--config", CONFIG, *TRAIN_SECTION, "--train-data", data / "scenes" / "train",
                      "--val-data", data / "scenes" / "val", "--data-yaml", VEHICLE_YAML, "--run-name", "plots",
                      *[a for o in (*ONE_EPOCH, "detection.training.plots=true") for a in ("--config-override", o)],
                      cwd=tmp_path, env=workspace_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for run_dir in (tmp_path / "outputs" / completion_lines(proc.stdout)[1], repo_root_run["run_dir"]):
        ours = (run_dir / "training_curves.png").read_bytes()
        assert ours[:8] == b"\x89PNG\r\n\x1a\n"
        theirs = run_dir / "ultralytics" / "results.png"
        assert not theirs.exists() or theirs.read_bytes() != ours
        rows = read_metrics_csv(run_dir / "metrics.csv")
        labels = curve_labels(rows)
        assert "val/mAP50" in labels and "val/mAP50-95" in labels
        assert set(labels) == set(rows[0]) - {"epoch"}
        assert not any("(B)" in label for label in labels)
