"""Model registry benchmark (issue 3): latency at 10,000 entries and many concurrent writers.

    .venv/bin/python benchmarks/registry_bench.py [--entries 10000] [--repeats 30] [--procs 8] [--per-proc 100]

"warm" = one long-lived ModelRegistry (its in-memory copy is current); "cold" = a new ModelRegistry per call,
which is what a training process does when it registers its one run.
"""

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGETS_MS = {"register": 30.0, "find_best": 10.0}


def make_entry(run_id: str, i: int) -> dict:
    """A realistic entry (~1 KB), as build_entry makes it for a detection run."""
    run_dir = f"/data/experiments/outputs/{run_id}"
    return {
        "run_id": run_id, "task": "vehicle_detection", "config_hash": f"{i % 4096:08x}",
        "checkpoint_path": f"{run_dir}/best_model.pth",
        "metrics": {"best_val_metric": (i * 7919 % 10007) / 10007, "val/mAP50": 0.5, "val/mAP50-95": 0.3,
                    "val/precision": 0.6, "val/recall": 0.7},
        "timestamp": f"2024-01-15T14:30:{i % 60:02d}.{i:06d}",
        "metadata": {"pytorch_version": "2.14.1", "torchvision_version": "0.29.1", "ultralytics_version": "8.4.190",
                     "numpy_version": "2.4.6", "python_version": "3.11.9", "git_commit": "ab" * 20,
                     "git_branch": "main", "git_dirty": False, "device": "cpu", "hostname": "host1", "seed": 42},
        "run_dir": run_dir, "checkpoint_sha256": hashlib.sha256(run_id.encode()).hexdigest(),
        "config_path": f"{run_dir}/config.yaml",
        "dataset": {"train": "sha256:" + "a" * 64, "val": "sha256:" + "b" * 64}, "status": "completed",
    }


CPU_MS = []  # CPU time of each timed() call in this process: robust to other load on the machine


def timed(fn) -> float:
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    CPU_MS.append((time.process_time() - cpu) * 1000)
    return (time.perf_counter() - start) * 1000


def measure(fn, repeats: int):
    """(wall ms samples, CPU ms samples) of `repeats` calls."""
    del CPU_MS[:]
    wall = [timed(fn) for _ in range(repeats)]
    return wall, list(CPU_MS)


def p50_p95(samples):
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def _writer(path: str, worker: int, count: int, start, out) -> None:
    from src.common.model_registry import ModelRegistry

    registry = ModelRegistry(path, lock_timeout=900)
    start.wait()
    times = [timed(lambda j=j: registry.register(make_entry(f"conc_{worker}_{j:04d}", j))) for j in range(count)]
    out.put(times)


def run_concurrent(path: Path, procs: int, per_proc: int):
    ctx = mp.get_context("spawn")  # separate interpreters, like parallel training jobs
    start, out = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_writer, args=(str(path), w, per_proc, start, out)) for w in range(procs)]
    for w in workers:
        w.start()
    time.sleep(2.0)  # let every interpreter import and reach the barrier
    t0 = time.perf_counter()
    start.set()
    times = [t for _ in workers for t in out.get(timeout=3600)]
    for w in workers:
        w.join()
    return time.perf_counter() - t0, times, [w.exitcode for w in workers]


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from src.common.model_registry import ModelRegistry

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--per-proc", type=int, default=100)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="registry_bench_") as tmp:
        path = Path(tmp) / "registry" / "model_registry.json"
        ModelRegistry(path).register_many(make_entry(f"seed_{i:05d}", i) for i in range(args.entries))
        size_mb = path.stat().st_size / 1e6
        rows = []
        warm = ModelRegistry(path)
        len(warm)  # load once: from here on its in-memory copy is current
        ids = iter(range(10 ** 6))
        new_entry = lambda prefix: make_entry(f"{prefix}_{next(ids):06d}", args.entries)  # noqa: E731
        rows.append(("register, warm instance", *measure(lambda: warm.register(new_entry("warm")), args.repeats),
                     "register"))
        rows.append(("register, new instance (cold)",
                     *measure(lambda: ModelRegistry(path).register(new_entry("cold")), args.repeats), "register"))
        best = lambda reg: reg.find_best_entry_by_metric("vehicle_detection", "best_val_metric", "max")  # noqa: E731
        warm = ModelRegistry(path)
        best(warm)
        rows.append(("find_best_entry_by_metric, warm", *measure(lambda: best(warm), args.repeats), "find_best"))
        rows.append(("find_best_entry_by_metric, cold", *measure(lambda: best(ModelRegistry(path)), args.repeats),
                     "find_best"))
        before = len(ModelRegistry(path))
        if args.procs:
            wall, conc_times, exitcodes = run_concurrent(path, args.procs, args.per_proc)
            rows.append((f"register under {args.procs}-process contention", conc_times, None, None))
        entries = json.loads(path.read_text(encoding="utf-8"))  # must parse: the file stayed valid
        new = sum(1 for e in entries if e["run_id"].startswith("conc_"))

    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nregistry: {args.entries} seed entries, file {size_mb:.1f} MB, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load average at end {load}")
    print(f"{'operation':<36} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'CPU p50':>8} {'target':>8}  p50 ok")
    for name, samples, cpu, target in rows:
        p50, p95 = p50_p95(samples)
        goal = TARGETS_MS.get(target)
        verdict = "" if goal is None else ("yes" if p50 <= goal else "NO")
        cpu_p50 = "" if cpu is None else f"{statistics.median(cpu):.1f}"
        print(f"{name:<36} {p50:>8.1f} {p95:>8.1f} {max(samples):>8.1f} {cpu_p50:>8} "
              f"{'' if goal is None else f'<= {goal:g}':>8}  {verdict}")
    expected = args.procs * args.per_proc
    if not args.procs:
        return 0
    valid = new == expected and len(entries) == before + expected and exitcodes == [0] * args.procs
    print(f"\n{args.procs} processes x {args.per_proc} registrations: {new} new entries (expected {expected}), "
          f"{len(entries)} total (expected {before + expected}), file valid JSON, worker exit codes {exitcodes}, "
          f"wall {wall:.1f} s ({expected / wall:.1f} registrations/s) -> {'ok' if valid else 'FAILED'}")
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
