"""`street-scene reproduce` (src/pipelines/reproduce.py, reproduce_checks.py, compare.py) and the evaluation
test-data check.

One tiny 3-epoch detection run is trained once for the module; every reproduction goes into the test's own
output root (`isolated_env`). The code root is pointed at a folder outside git, so a colleague editing the
checkout meanwhile cannot turn a "same code" check into a code difference.
"""

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from src.cli.main import main
from src.common.yaml_io import dump_yaml, load_yaml
from src.common.report import shown
from src.pipelines import reproduce_checks as checks
from src.pipelines.compare import compare_runs, compare_traces, verdict
from tests.helpers import run_script

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "detection_config.yaml"
# batch 64 > 8 images: one batch per epoch and ultralytics' accumulate = nbs/batch = 1, so every epoch takes an
# optimizer step (with batch 4 it would accumulate 16 batches and a 3-epoch run would not train at all).
# close_mosaic=1 and 3 epochs make `--epochs 2` sensitive to the schedule of the full run (lr and mosaic).
OVERRIDES = ["device=cpu", "detection.training.epochs=3", "detection.training.batch_size=64",
             "detection.training.image_size=64", "detection.training.warmup_epochs=0",
             "detection.training.augmentation.close_mosaic=1"]
RUN_FILES = ("config.yaml", "metadata.yaml", "metrics.csv", "environment.txt", "best_model.pth",
             "checkpoint_epoch_1.pth", "checkpoint_epoch_2.pth", "checkpoint_epoch_3.pth")


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A completed 3-epoch run on 8 synthetic 64 px images, and its dataset."""
    from src.data.synthetic import make_detection_dataset
    from src.pipelines.compare import weight_hash
    from src.pipelines.runner import TrainRequest, train

    root = tmp_path_factory.mktemp("original")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("STREET_SCENE_SEED", raising=False)
        for var, sub in (("STREET_SCENE_OUTPUT_DIR", "outputs"), ("STREET_SCENE_REGISTRY", "registry.json"),
                         ("YOLO_CONFIG_DIR", "yolo_config"), ("STREET_SCENE_CACHE", "cache")):
            mp.setenv(var, str(root / sub))
        mp.setattr("src.common.metadata.CODE_ROOT", root / "code")  # not a git checkout: no git state at all
        mp.chdir(root)
        make_detection_dataset("vehicle_detection", root / "data", 8, 4, 2, seed=0, image_size=64)
        result = train(TrainRequest(config_path=CONFIG, task="detection", subtask="vehicle_detection",
                                    train_data=str(root / "data" / "train"), val_data=str(root / "data" / "val"),
                                    run_name="tiny", overrides=OVERRIDES))
        hashes = [weight_hash(result.run_dir / f"checkpoint_epoch_{e}.pth") for e in (1, 2, 3)]
        assert len(set(hashes)) == 3, "the tiny run must actually train, or bit-exact checks prove nothing"
        yield SimpleNamespace(run_dir=result.run_dir, run_id=result.run_id, data=root / "data")


def copy_run(original, dest: Path, **meta_updates) -> Path:
    dest.mkdir(parents=True)
    for name in RUN_FILES:
        shutil.copy2(original.run_dir / name, dest / name)
    if meta_updates:
        meta = load_yaml(dest / "metadata.yaml")
        meta.update(meta_updates)
        (dest / "metadata.yaml").write_text(dump_yaml(meta))
    return dest


def new_run_dirs(env: Path):
    outputs = env / "outputs"
    return sorted(p for p in outputs.iterdir() if p.is_dir()) if outputs.is_dir() else []


# ---------------------------------------------------------------- end to end (trains)


@pytest.mark.slow
def test_rerun_of_a_run_is_bit_exact(original, isolated_env, capsys):
    assert main(["reproduce", str(original.run_dir)]) == 0
    out = capsys.readouterr().out
    assert "verdict: bit-exact" in out
    for category in ("code", "data", "config", "environment", "device", "determinism"):
        assert f"{category}: same as recorded" in out
    [new] = new_run_dirs(isolated_env)
    assert new.name.endswith("_tiny-repro")
    report = json.loads((new / "reproduce.json").read_text())
    assert report["verdict"] == "bit-exact" and report["first_divergent_epoch"] is None
    assert [w["checkpoint"] for w in report["weights"]["compared"]] == [
        "checkpoint_epoch_1.pth", "checkpoint_epoch_2.pth", "checkpoint_epoch_3.pth", "best_model.pth"]
    assert all(w["equal"] and len(w["original"]) == 64 for w in report["weights"]["compared"])
    assert report["trace"]["differences"] == [] and report["trace"]["epochs_reproduction"] == 3
    assert report["best_metrics"] == []
    assert report["config_hash"]["original"] == report["config_hash"]["reproduction"]
    meta = load_yaml(new / "metadata.yaml")
    assert meta["reproduces"] == original.run_id and meta["seed"] == 42 and "stop_after_epoch" not in meta


@pytest.mark.slow
def test_script_reproduces_first_epochs_as_json(original, isolated_env):
    """scripts/reproduce.py in a fresh process: `--epochs 2` of the 3-epoch run, stdout pure JSON."""
    proc = run_script("reproduce.py", original.run_dir, "--epochs", "2", "--json", "--allow-code-change",
                      cwd=isolated_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert (report["verdict"], report["partial"], report["epochs"]) == ("bit-exact", True, 2)
    assert [w["checkpoint"] for w in report["weights"]["compared"]] == ["checkpoint_epoch_1.pth",
                                                                         "checkpoint_epoch_2.pth"]
    assert report["best_metrics"] is None
    new = Path(report["reproduction"]["run_dir"])
    assert json.loads((new / "reproduce.json").read_text()) == report
    assert load_yaml(new / "metadata.yaml")["stop_after_epoch"] == 2
    assert "Training completed" in proc.stderr  # training output went to stderr


@pytest.mark.slow
def test_changed_data_is_refused_then_reported_with_allow_flag(original, isolated_env, capsys):
    data = isolated_env / "data"
    shutil.copytree(original.data, data)
    meta = load_yaml(original.run_dir / "metadata.yaml")
    run = copy_run(original, isolated_env / "runs" / "changed",
                   data={**meta["data"], "train_spec": str(data / "train"), "val_spec": str(data / "val")})
    label = sorted((data / "train" / "labels").glob("*.txt"))[0]
    label.write_text(label.read_text() + "0 0.5 0.5 0.25 0.25\n")

    assert main(["reproduce", str(run)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: not reproducing")
    assert "--allow-data-change" in captured.err
    assert "data: 2 difference(s)" in captured.out  # the train split's total bytes and content sha256
    assert "  train: total bytes" in captured.out and "  train: content sha256" in captured.out
    assert new_run_dirs(isolated_env) == []  # refused before any run dir was made

    code = main(["reproduce", str(run), "--allow-data-change", "--epochs", "1", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["differences"]["data"] and report["differences"]["data"][0].startswith("train: ")
    assert report["allowed"]["data_change"] is True
    assert report["weights"]["compared"][0]["equal"] is False  # an extra box changes the gradients
    assert report["verdict"] != "bit-exact" and code == (1 if report["verdict"] == "diverged" else 0)


@pytest.mark.slow
def test_config_override_is_reported_and_diverges(original, isolated_env, capsys):
    code = main(["reproduce", str(original.run_dir), "--epochs", "1",
                 "--config-override", "detection.training.learning_rate=0.02"])
    out = capsys.readouterr().out
    assert code == 1
    assert "config: 1 difference(s)" in out and "detection.training.learning_rate: 0.01 -> 0.02" in out
    assert "verdict: diverged at epoch 1" in out
    [new] = new_run_dirs(isolated_env)
    report = json.loads((new / "reproduce.json").read_text())
    assert report["differences"]["config"] == ["detection.training.learning_rate: 0.01 -> 0.02"]
    assert any(d["key"] == "lr/pg0" and not d["within_tolerance"] for d in report["trace"]["differences"])


@pytest.mark.slow
def test_edited_config_yaml_is_reported(original, isolated_env, capsys):
    """A run dir whose config.yaml was changed after training: the key is listed (then refused for its data)."""
    run = copy_run(original, isolated_env / "runs" / "edited", dataset_fingerprints=None)
    config = load_yaml(run / "config.yaml")
    config["detection"]["training"]["momentum"] = 0.9
    (run / "config.yaml").write_text(dump_yaml(config))
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    assert main(["reproduce", str(run)]) == 2
    assert torch.are_deterministic_algorithms_enabled() == before  # the refused check left no global switch on
    out = capsys.readouterr().out
    assert "detection.training.momentum: 0.937 -> 0.9" in out
    assert "recorded no dataset fingerprints" in out


def _torch_save(path: Path, obj) -> None:
    import torch

    torch.save(obj, path)


BAD_RUNS = {
    "unknown run id": (None, "unknown run"),
    "no metadata": (lambda run: (run / "metadata.yaml").unlink(), "missing metadata.yaml"),
    "failed run": (lambda run: _set_meta(run, status="failed"), "only completed runs"),
    "missing data": (lambda run: _set_meta(run, data={"train_spec": str(run / "gone"), "val_spec": str(run)}),
                     "no longer exists"),
    "old checkpoint format": (lambda run: _torch_save(run / "best_model.pth", {"model": {}, "epoch": 3}),
                              "not a street-scene checkpoint"),
    "newer checkpoint format": (lambda run: _torch_save(run / "best_model.pth", {"format_version": 99}),
                                "incomplete"),
    "epochs beyond the run": (lambda run: ["--epochs", "4"], "--epochs must be an integer from 1 to 3"),
}


def _set_meta(run: Path, **updates) -> None:
    meta = load_yaml(run / "metadata.yaml")
    meta.update(updates)
    (run / "metadata.yaml").write_text(dump_yaml(meta))


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_bad_input_is_one_line_exit_2(original, isolated_env, capsys, case):
    spoil, message = BAD_RUNS[case]
    run = copy_run(original, isolated_env / "runs" / "bad")
    extra = spoil(run) if spoil else None
    argv = ["reproduce", str(run) if spoil else "20990101_000000_nope", *(extra or [])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert new_run_dirs(isolated_env) == []


@pytest.mark.slow
def test_evaluation_reports_changed_test_data(original, isolated_env, capsys):
    """--verify-config compares the test data with the previous saved evaluation of the same checkpoint."""
    from src.pipelines.evaluation import EvalRequest, evaluate

    test = isolated_env / "test"
    shutil.copytree(original.data / "test", test)
    run = copy_run(original, isolated_env / "runs" / "evaluated")

    def evaluate_once():
        with shown():  # what `evaluate` shows on stdout
            evaluate(EvalRequest(config_path=run / "config.yaml", task="detection", subtask="vehicle_detection",
                                 test_data=str(test), checkpoint_path=run / "best_model.pth", verify_config=True))
        return capsys.readouterr().out

    assert "Test data" not in evaluate_once()  # nothing earlier to compare with ("matches": unit test below)
    label = sorted((test / "labels").glob("*.txt"))[0]
    label.write_text(label.read_text() + "1 0.5 0.5 0.2 0.2\n")
    second = evaluate_once()
    assert "Test data differs from the previous evaluation of this checkpoint" in second
    assert "test: content sha256" in second
    saved = sorted((run / "evaluations").glob("*.json"))
    assert len(saved) == 2 and all(json.loads(p.read_text())["test_data_fingerprints"]["test"]["files"] == 4
                                   for p in saved)


# ---------------------------------------------------------------- comparison and checks (no training)


def test_trace_comparison_tolerance_nan_and_missing_epochs():
    trace = {1: {"loss": 1.0, "map": math.nan}, 2: {"loss": 0.5, "map": 0.1}}
    assert compare_traces(trace, {1: {"loss": 1.0, "map": math.nan}, 2: {"loss": 0.5, "map": 0.1}},
                          1e-6, 0)["differences"] == []  # NaN in both runs is no difference
    near = compare_traces(trace, {1: {"loss": 1.0 + 1e-9, "map": math.nan}, 2: trace[2]}, 1e-6, 0)
    assert near["first_difference_epoch"] == 1 and near["first_divergent_epoch"] is None
    far = compare_traces(trace, {1: trace[1], 2: {"loss": 0.6, "map": 0.1}}, 1e-6, 0)
    assert far["first_divergent_epoch"] == 2 and far["differences"][0]["original"] == 0.5
    assert compare_traces(trace, {1: trace[1], 2: {"loss": 0.5 + 1e-3, "map": 0.1}}, 0, 1e-2)[
        "first_divergent_epoch"] is None  # atol
    short = compare_traces(trace, {1: trace[1]}, 1e-6, 0)
    assert short["epochs_only_original"] == [2] and short["first_divergent_epoch"] == 2
    assert compare_traces(trace, {1: trace[1]}, 1e-6, 0, upto=1)["first_divergent_epoch"] is None


def test_verdicts():
    equal = {"equal": True}
    clean = compare_traces({1: {"x": 1.0}}, {1: {"x": 1.0}}, 1e-6, 0)
    near = compare_traces({1: {"x": 1.0}}, {1: {"x": 1.0 + 1e-9}}, 1e-6, 0)
    assert verdict(equal, clean, []) == "bit-exact"
    assert verdict({"equal": False}, clean, []) == "within tolerance"  # weights differ, metrics do not
    assert verdict(equal, near, None) == "within tolerance"
    best = [{"key": "map", "original": 0.5, "reproduction": 0.4, "within_tolerance": False}]
    assert verdict(equal, clean, best) == "diverged"


def _fake_run(root: Path, name: str, rows, weight: float) -> Path:
    import torch

    from src.common.checkpoint import build_checkpoint, save_checkpoint

    run = root / name
    run.mkdir()
    cols = list(rows[0])
    (run / "metrics.csv").write_text("\n".join([",".join(cols)] + [",".join(str(r[c]) for c in cols)
                                                                    for r in rows]) + "\n")
    for epoch in [r["epoch"] for r in rows] + ["best"]:
        ckpt = build_checkpoint(task="detection", subtask="t", model_state={"w": torch.full((2,), weight)},
                                model_spec={}, epoch=1, metrics={}, config={}, config_hash="0" * 8, metadata={})
        save_checkpoint(run / (f"checkpoint_epoch_{epoch}.pth" if epoch != "best" else "best_model.pth"), ckpt)
    return run


def test_compare_runs_on_run_dirs(tmp_path):
    rows = [{"epoch": 1, "loss": 1.0, "time": 5.0}, {"epoch": 2, "loss": 0.5, "time": 4.0}]
    a = _fake_run(tmp_path, "a", rows, 1.0)
    b = _fake_run(tmp_path, "b", [{**r, "time": 9.0} for r in rows], 1.0)
    c = _fake_run(tmp_path, "c", [rows[0], {**rows[1], "loss": 0.7}], 2.0)
    same = compare_runs(a, b, 1e-6, 0, best_original={"m": 1}, best_reproduction={"m": 1, "time_s": 3})
    assert same["verdict"] == "bit-exact" and same["best_metrics"] == []
    diverged = compare_runs(a, c, 1e-6, 0)
    assert diverged["verdict"] == "diverged" and diverged["first_divergent_epoch"] == 2
    assert diverged["weights"]["first_difference_epoch"] == 1
    partial = compare_runs(a, c, 1e-6, 0, epochs=1)
    assert partial["verdict"] == "within tolerance" and partial["best_metrics"] is None


def test_code_differences():
    clean = {"git_commit": "a" * 40, "git_dirty": False}
    assert checks.code_differences(clean, None, dict(clean), None) == []
    assert checks.code_differences(clean, None, {**clean, "git_commit": "b" * 40}, None) == [
        f"git_commit: {'a' * 40} -> {'b' * 40}"]
    assert checks.code_differences(clean, None, {**clean, "git_dirty": True}, "diff") == [
        "git_dirty: false -> true"]
    dirty = {**clean, "git_dirty": True}
    assert checks.code_differences(dirty, "x", dict(dirty), "x") == []
    assert "uncommitted changes differ" in checks.code_differences(dirty, "x", dict(dirty), "y")[0]
    assert "no git.diff" in checks.code_differences(dirty, None, dict(dirty), "y")[0]
    assert "older street-scene" in checks.code_differences({}, None, clean, None)[0]
    nogit = {"git_commit": None, "git_dirty": None}
    assert checks.code_differences(nogit, None, dict(nogit), None) == []
    assert checks.code_notes(nogit, dict(nogit)) and not checks.code_notes(clean, clean)


def test_package_and_field_differences():
    lines = checks.package_differences("numpy==2.1\ntorch==2.14.1\n", "torch==2.15.0\nrich==13\n")
    assert lines == ["package numpy: 2.1 -> <missing>", "package rich: <missing> -> 13",
                     "package torch: 2.14.1 -> 2.15.0"]
    assert checks.package_differences(None, "torch==1\n") == []
    assert checks.field_differences({"device": "cuda", "cpu_model": "x"}, {"device": "cpu", "cpu_model": "x"},
                                    checks.DEVICE_KEYS) == ["device: cuda -> cpu"]


def test_previous_test_data_lines(tmp_path):
    from src.pipelines.evaluation import previous_test_data_lines

    fp = {"test": {"version": 1, "files": 4, "bytes": 100, "sha256": "a" * 64, "names": ["car"]}}
    ckpt = tmp_path / "best_model.pth"
    assert previous_test_data_lines(ckpt, fp) == []
    folder = tmp_path / "evaluations"
    folder.mkdir()
    (folder / "20250101_000000_000001_best_model.json").write_text(json.dumps({"test_data_fingerprints": None}))
    assert "recorded no test-data fingerprint" in previous_test_data_lines(ckpt, fp)[0]
    other = {"test": {**fp["test"], "sha256": "b" * 64}}
    (folder / "20250102_000000_000001_best_model.json").write_text(json.dumps({"test_data_fingerprints": other}))
    (folder / "20250103_000000_000001_checkpoint_epoch_1.json").write_text(json.dumps({"test_data_fingerprints": fp}))
    (folder / "20250104_000000_000001_best_model.json").write_text("{broken")
    lines = previous_test_data_lines(ckpt, fp)
    assert "differs" in lines[0] and "20250102_000000_000001_best_model.json" in lines[0]
    assert lines[1] == "  test: content sha256 bbbbbbbbbbbb -> aaaaaaaaaaaa (same file count and size: " \
                       "file contents or names changed)"
    assert "matches" in previous_test_data_lines(tmp_path / "checkpoint_epoch_1.pth", fp)[0]
