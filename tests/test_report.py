"""`street-scene report` on hand-written run directories: content, escaping, bad input, atomic refusal."""

import json
import re
import subprocess
import sys
from pathlib import Path

from src.common.config_manager import compute_config_hash
from src.common.model_registry import ModelRegistry, build_entry
from src.common.yaml_io import dump_yaml
from src.reporting.html_report import script_json
from src.reporting.report import build_report

REPO = Path(__file__).resolve().parents[1]
HOSTILE = "</script><script>alert(1)</script><!--"
EXPORT = {"format": "onnx", "path": "exports/best.onnx", "sha256": "ab" * 32, "created_at": "2025-01-02T03:04:05",
          "imgsz": 64, "dynamic": False, "parity": {"max_abs_diff": 1.5e-05, "max_rel_diff": 2e-06,
                                                    "torch_p50_ms": 12.5, "runtime_p50_ms": 4.25, "images": 8}}


def write_run(outputs: Path, run_id: str, lr=0.01, best=0.5, subtask="vehicle_detection", exports=False,
              names=("car", "truck")) -> Path:
    """A completed run directory as the runner writes it (metadata, config, metrics.csv, checkpoint)."""
    run_dir = outputs / run_id
    run_dir.mkdir(parents=True)
    config = {"seed": 42, "device": "cpu", "detection": {"training": {"learning_rate": lr, "epochs": 3}}}
    (run_dir / "config.yaml").write_text(dump_yaml(config))
    (run_dir / "best_model.pth").write_bytes(run_id.encode() * 100)
    rows = ["epoch,train/box_loss,val/mAP50-95"] + [f"{e},{2.0 / e},{best * e / 3}" for e in (1, 2, 3)]
    (run_dir / "metrics.csv").write_text("\n".join(rows) + "\n")
    import hashlib

    meta = {"run_id": run_id, "status": "completed", "task": "detection", "subtask": subtask,
            "config_hash": compute_config_hash(config), "seed": 42, "seed_source": "cli",
            "started_at": "2025-01-01T00:00:00", "finished_at": "2025-01-01T00:01:00",
            "data": {"names": list(names)}, "pytorch_version": "2.0", "ultralytics_version": "8.4.190",
            "git_commit": "0123456789abcdef", "git_dirty": True,
            "command": f"python scripts/train.py --run-name {run_id}",
            "determinism": {"deterministic_algorithms": True},
            "dataset_fingerprints": {"train": {"version": 1, "files": 4, "bytes": 10, "sha256": "f" * 64,
                                               "names": list(names)}},
            "result": {"checkpoint": "best_model.pth",
                       "checkpoint_sha256": hashlib.sha256((run_dir / "best_model.pth").read_bytes()).hexdigest(),
                       "metrics": {"best_val_metric": best, "best_epoch": 3, "epochs_completed": 3}}}
    (run_dir / "metadata.yaml").write_text(dump_yaml(meta))
    if exports:
        (run_dir / "exports.json").write_text(json.dumps([EXPORT, {**EXPORT, "format": HOSTILE}]))
    return run_dir


def write_registry(root: Path, run_dirs) -> Path:
    registry = ModelRegistry(root / "registry" / "model_registry.json")
    registry.register_many(build_entry(d) for d in run_dirs)
    return registry.path


def page_data(page: str) -> dict:
    block = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S).group(1)
    return json.loads(block)


def cli(*args, cwd: Path):
    return subprocess.run([sys.executable, "-m", "src.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(cwd)}, timeout=120)


def test_report_holds_runs_diffs_provenance_exports_and_missing_runs(tmp_path):
    outputs = tmp_path / "outputs"
    best = write_run(outputs, "20250101_000000_best", lr=0.01, best=0.9)
    other = write_run(outputs, "20250102_000000_other", lr=0.02, best=0.5, exports=True)
    gone = write_run(outputs, "20250103_000000_gone", best=0.95 - 0.9)
    registry = write_registry(tmp_path, [best, other, gone])
    import shutil

    shutil.rmtree(gone)
    out = tmp_path / "report.html"
    done = build_report(out, registry)
    page = out.read_text()
    assert done["runs"] == 3 and done["bytes"] == len(page.encode())
    assert str(registry) in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    data = page_data(page)
    runs = {r["id"]: r for r in data["runs"]}
    assert data["subtasks"][0]["best_run"] == best.name
    assert runs[other.name]["diff"] == [["detection.training.learning_rate", 0.01, 0.02]]
    assert runs[best.name]["diff"] == []
    assert runs[gone.name]["missing"] and runs[gone.name]["verify"]["checkpoint"] == "missing"
    assert runs[other.name]["verify"] == {"checkpoint": "ok", "sha256": "ok", "config_hash": "ok"}
    assert runs[other.name]["exports"][0] == EXPORT
    prov = runs[other.name]["provenance"]
    assert (prov["seed"], prov["seed_source"], prov["git_dirty"]) == (42, "cli", True)
    assert data["shared"][prov["datasets"]]["train"]["sha256"] == "f" * 64
    assert runs[other.name]["reproduce"][0] == f"street-scene reproduce {other.name}"
    assert data["shared"][runs[other.name]["curves"]["columns"]] == ["epoch", "train/box_loss", "val/mAP50-95"]
    assert "missing" in page and gone.name in page


def test_values_from_files_are_inert(tmp_path):
    outputs = tmp_path / "outputs"
    runs = [write_run(outputs, "20250101_000000_a", best=0.9),
            write_run(outputs, "20250102_000000_b", lr=HOSTILE + "\u2028", best=0.1, exports=True,
                      names=(HOSTILE, "truck"))]
    out = tmp_path / "report.html"
    build_report(out, write_registry(tmp_path, runs))
    page = out.read_text()
    # the only script-closing tags are the page's own two; no raw comment opener or line separator
    assert page.count("</script>") == 2 and "<!--" not in page and "\u2028" not in page
    assert "<script>alert(1)" not in page
    data = page_data(page)  # ...and the values arrive intact
    b = next(r for r in data["runs"] if r["id"] == runs[1].name)
    assert b["diff"][0][2] == HOSTILE + "\u2028" and b["exports"][1]["format"] == HOSTILE


def test_script_json_escapes():
    text = script_json({"a": "</script><!--&\u2028\u2029>"})
    assert not set("<>&\u2028\u2029") & set(text)
    assert json.loads(text) == {"a": "</script><!--&\u2028\u2029>"}


def test_empty_registry_page_and_refusals(tmp_path):
    out = tmp_path / "report.html"
    done = cli("report", "--out", str(out), "--registry", str(tmp_path / "none.json"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "has no entries" in out.read_text()
    again = cli("report", "--out", str(out), "--registry", str(tmp_path / "none.json"), cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--force" in again.stderr
    assert cli("report", "--out", str(out), "--registry", str(tmp_path / "none.json"), "--force",
               cwd=tmp_path).returncode == 0
    missing_dir = cli("report", "--out", str(tmp_path / "no" / "r.html"), cwd=tmp_path)
    assert missing_dir.returncode == 2 and "does not exist" in missing_dir.stderr
    assert not (tmp_path / "no").exists()


def test_unknown_subtask_names_the_ones_there(tmp_path):
    registry = write_registry(tmp_path, [write_run(tmp_path / "outputs", "20250101_000000_a")])
    out = tmp_path / "r.html"
    done = cli("report", "--out", str(out), "--registry", str(registry), "--subtask", "trams", cwd=tmp_path)
    assert done.returncode == 2 and "vehicle_detection" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_damaged_run_files_are_problems_not_crashes(tmp_path):
    run = write_run(tmp_path / "outputs", "20250101_000000_a", exports=True)
    registry = write_registry(tmp_path, [run])
    (run / "metrics.csv").write_text("epoch,loss\n1,nan\n2,oops\n")
    (run / "exports.json").write_text("{not json")
    (run / "config.yaml").write_text("a: *missing_anchor\n")
    (run / "evaluations").mkdir()
    (run / "evaluations" / "x.json").write_text("[1, NaN]")
    out = tmp_path / "r.html"
    build_report(out, registry)
    record = page_data(out.read_text())["runs"][0]
    assert any("exports.json" in p for p in record["problems"]) and any("config.yaml" in p for p in record["problems"])
    assert record["curves"]["values"] == [[1, 2], [None, None]]
    assert record["evaluations"][0]["problem"]
    assert record["verify"]["config_hash"] == "config.yaml unreadable"


def test_commands_do_not_import_torch():
    code = ("import sys, src.cli.report_cmd, src.cli.leaderboard_cmd, src.reporting.report_data, "
            "src.reporting.leaderboard; assert 'torch' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True).returncode == 0


def test_run_directories_read_in_worker_processes_give_the_same_report(tmp_path, monkeypatch):
    import src.reporting.report_data as report_data

    outputs = tmp_path / "outputs"
    dirs = [write_run(outputs, f"20250101_00000{i}_r{i}", lr=0.01 * (i + 1), best=0.1 * i, exports=i == 2)
            for i in range(5)]
    registry = write_registry(tmp_path, dirs)
    (outputs / "20250101_000003_r3" / "metrics.csv").unlink()  # a problem line must survive the trip too

    def without_clock(report):
        return {k: v for k, v in report.items() if k != "generated_at"}

    monkeypatch.setattr(report_data, "_PARALLEL_FROM", 10**9)
    serial = report_data.collect_report(registry)
    monkeypatch.setattr(report_data, "_PARALLEL_FROM", 2)
    parallel = report_data.collect_report(registry)
    assert without_clock(parallel) == without_clock(serial)
    assert [r["id"] for r in parallel["runs"]] == [d.name for d in dirs]
    assert any(r["problems"] for r in parallel["runs"])
