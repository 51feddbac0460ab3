"""`street-scene report` at scale: build time and page size for N registry entries with E epochs each.

    python benchmarks/report_bench.py [--runs 1000] [--epochs 20] [--repeat 2] [--keep DIR]

Writes N synthetic detection run directories (metadata.yaml and config.yaml shaped like real ones, metrics.csv
with ultralytics' columns, a 64 KB best_model.pth) and registers them, then times `build_report` (gather +
render + atomic write). Targets: <= 5 s and <= 5 MB for 1,000 runs of 20 epochs. Every checkpoint is hashed for
the verify column, so real checkpoints (6 MB for yolov8n) add their read time on top of these figures.
"""

import argparse
import hashlib
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.common.config_manager import compute_config_hash  # noqa: E402
from src.common.model_registry import ModelRegistry, build_entry  # noqa: E402
from src.common.yaml_io import dump_yaml, load_yaml  # noqa: E402
from src.reporting.report import build_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["epoch", "train/box_loss", "train/cls_loss", "train/dfl_loss", "val/precision", "val/recall", "val/mAP50",
           "val/mAP50-95", "val/box_loss", "val/cls_loss", "val/dfl_loss", "lr/pg0", "lr/pg1", "lr/pg2", "fitness"]
NAMES = ["car", "truck", "bus", "motorcycle", "bicycle"]


def write_run(root: Path, i: int, epochs: int, rng: random.Random, base_config: dict) -> Path:
    run_id = f"20250101_{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}_sweep_{i:04d}"
    run_dir = root / run_id
    run_dir.mkdir()
    config = {**base_config, "seed": 42 + i % 3}
    config["detection"] = {**config["detection"], "training": {**config["detection"]["training"],
                                                                 "learning_rate": round(0.001 * (1 + i % 10), 4)}}
    (run_dir / "config.yaml").write_text(dump_yaml(config))
    ckpt = run_dir / "best_model.pth"
    ckpt.write_bytes(rng.randbytes(64 * 1024))
    rows = [",".join(COLUMNS)]
    best = 0.0
    for e in range(1, epochs + 1):
        m = min(0.9, 0.02 * e + rng.random() * 0.05)
        best = max(best, m)
        values = [e] + [rng.uniform(0.5, 3) / e for _ in range(3)] + [rng.random() for _ in range(3)] + [m] + \
            [rng.uniform(0.5, 3) / e for _ in range(3)] + [0.01 / e] * 3 + [m]
        rows.append(",".join(str(v) for v in values))
    (run_dir / "metrics.csv").write_text("\n".join(rows) + "\n")
    fp = {"version": 1, "files": 400, "bytes": 123456, "sha256": hashlib.sha256(b"train").hexdigest(), "names": NAMES}
    meta = {
        "run_id": run_id, "run_name": f"sweep_{i:04d}", "status": "completed", "task": "detection",
        "subtask": "vehicle_detection", "config_hash": compute_config_hash(config), "seed": config["seed"],
        "seed_source": "config", "started_at": "2025-01-01T00:00:00", "finished_at": "2025-01-01T00:10:00",
        "data": {"train": "/data/veh/train", "val": "/data/veh/val", "names": NAMES},
        "python_version": "3.11.7", "pytorch_version": "2.14.1", "torchvision_version": "0.29.1",
        "ultralytics_version": "8.4.190", "numpy_version": "2.4.6", "device": "cpu", "cpu_model": "AMD EPYC",
        "num_threads": 2, "hostname": "vm", "os": "Linux", "git_commit": "81f9dc093cd68c1efc3e5a92b775e0850de867d7",
        "git_branch": "main", "git_dirty": i % 7 == 0, "command": f"python scripts/train.py --run-name sweep_{i:04d}",
        "cwd": "/work", "determinism": {"deterministic_algorithms": True, "cudnn_benchmark": False,
                                        "torch_num_threads": 2},
        "dataset_fingerprints": {"train": fp, "val": {**fp, "files": 80}}, "epochs_done": epochs,
        "result": {"checkpoint": "best_model.pth", "checkpoint_sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
                   "metrics": {"best_val_metric": best, "best_epoch": epochs, "epochs_completed": epochs,
                               "val/mAP50-95": best}},
    }
    (run_dir / "metadata.yaml").write_text(dump_yaml(meta))
    return run_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="build the workspace here and keep it (default: a temp dir)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="report-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        rng = random.Random(0)
        base = load_yaml(REPO / "configs" / "detection_config.yaml")
        (work / "outputs").mkdir()
        t0 = time.perf_counter()
        run_dirs = [write_run(work / "outputs", i, args.epochs, rng, base) for i in range(args.runs)]
        registry = ModelRegistry(work / "registry" / "model_registry.json")
        registry.register_many(build_entry(d) for d in run_dirs)
        print(f"setup: {args.runs} runs x {args.epochs} epochs in {time.perf_counter() - t0:.1f} s")
        times = []
        for _ in range(args.repeat):
            out = work / "report.html"
            start = time.perf_counter()
            done = build_report(out, registry.path, force=True)
            times.append(time.perf_counter() - start)
        size = os.path.getsize(work / "report.html")
        print(f"report: {done['runs']} runs, build {min(times):.2f} s (best of {args.repeat}; all: "
              f"{', '.join(f'{t:.2f}' for t in times)}), {size / 1e6:.2f} MB")
        ok = min(times) <= 5.0 and size <= 5e6
        print("targets (<= 5 s, <= 5 MB): " + ("met" if ok else "MISSED"))
        return 0 if ok else 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
