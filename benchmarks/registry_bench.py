"""Model registry benchmark: our registry against MLflow's sqlite store at 1k, 10k and 100k entries.

    .venv/bin/python benchmarks/registry_bench.py [--sizes 1000 10000 100000] [--repeats 15] [--procs 8]

Two jobs, as a training process and `street-scene registry` do them:
  register   add one run. Ours: ModelRegistry(path).register(entry). MLflow: create_run + log_batch (5 metrics,
             tags) + update_run_info(FINISHED).
  find_best  the best run of a task by one metric. Ours: find_best_entry_by_metric. MLflow: search_runs filtered
             on the task tag, ordered by the metric, max_results=1.
"new process" is the first call in a fresh interpreter whose imports are done (MLflow: and whose store is built;
that construction is listed apart); "warm" repeats the call on one long-lived object in one process. The
baseline is stdlib json.load of the same file (in-process, page cache warm). Registries are built directly (the
JSON file written at once; MLflow rows cloned in SQL from one run made through its API), not by N registrations.
"first access" is the first call after the file was written by something else (here: built directly): it
validates the whole file and builds the index, as after a hand edit. Times are wall-clock milliseconds.
"""

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD_ENV = dict(os.environ)  # set by main(): bytecode cached (as an installed package has it), outside the repo
TASK, METRIC = "vehicle_detection", "best_val_metric"
TARGETS = {  # (operation, size) -> (limit ms, how it was set); a None limit is a multiple of json.load
    ("register", 10_000): (0.35, "0.35x json.load"), ("find_best", 10_000): (0.15, "0.15x json.load"),
    ("register", 100_000): (60.0, "60 ms"), ("find_best", 100_000): (40.0, "40 ms"),
    ("cli list --task", 10_000): (300.0, "300 ms"), ("cli best", 10_000): (300.0, "300 ms"),
}


def make_entry(run_id: str, i: int) -> dict:
    """A realistic entry (~1 KB), as build_entry makes it for a detection run."""
    import hashlib

    run_dir = f"/data/experiments/outputs/{run_id}"
    return {
        "run_id": run_id, "task": TASK, "config_hash": f"{i % 4096:08x}",
        "checkpoint_path": f"{run_dir}/best_model.pth",
        "metrics": {METRIC: metric_value(i), "val/mAP50": 0.5, "val/mAP50-95": 0.3, "val/precision": 0.6,
                    "val/recall": 0.7},
        "timestamp": f"2024-01-15T14:30:{i % 60:02d}.{i % 1_000_000:06d}",
        "metadata": {"pytorch_version": "2.14.1", "torchvision_version": "0.29.1", "ultralytics_version": "8.4.190",
                     "numpy_version": "2.4.6", "python_version": "3.11.9", "git_commit": "ab" * 20,
                     "git_branch": "main", "git_dirty": False, "device": "cpu", "hostname": "host1", "seed": 42},
        "run_dir": run_dir, "checkpoint_sha256": hashlib.sha256(run_id.encode()).hexdigest(),
        "config_path": f"{run_dir}/config.yaml",
        "dataset": {"train": "sha256:" + "a" * 64, "val": "sha256:" + "b" * 64}, "status": "completed",
    }


def metric_value(i: int) -> float:
    return (i * 7919 % 10007) / 10007


# ---- children: one fresh interpreter per measurement ----------------------------------------------------------
def child(argv) -> None:
    system, op, path, count, tag = argv[0], argv[1], argv[2], int(argv[3]), argv[4]
    t0 = time.perf_counter()
    if system == "ours":
        call, setup_ms, import_ms = _ours(op, path, tag), 0.0, (time.perf_counter() - t0) * 1000
    else:
        call, import_ms, setup_ms = _mlflow(op, path, tag, t0)
    times = []
    for k in range(count):
        start = time.perf_counter()
        call(k)
        times.append((time.perf_counter() - start) * 1000)
    print(json.dumps({"import_ms": import_ms, "setup_ms": setup_ms, "op_ms": times}))


def _ours(op, path, tag):
    sys.path.insert(0, str(REPO))
    import filelock  # noqa: F401  (imported lazily by a write; counted with the imports, not the call)

    from src.common.model_registry import ModelRegistry

    if op == "register":
        return lambda k: ModelRegistry(path).register(make_entry(f"{tag}_{k}", k))
    if op == "register-warm":
        registry = ModelRegistry(path)
        return lambda k: registry.register(make_entry(f"{tag}_{k}", k))
    if op == "best-warm":
        registry = ModelRegistry(path)
        return lambda k: registry.find_best_entry_by_metric(TASK, METRIC, "max")
    return lambda k: ModelRegistry(path).find_best_entry_by_metric(TASK, METRIC, "max")


def _mlflow(op, db, tag, t0):
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    from mlflow.entities import Metric, RunStatus, RunTag, ViewType
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    t1 = time.perf_counter()
    store = SqlAlchemyStore(f"sqlite:///{db}", str(Path(db).parent / "mlartifacts"))
    exp = store.get_experiment_by_name("bench").experiment_id
    t2 = time.perf_counter()

    def register(k):
        entry = make_entry(f"{tag}_{k}", k)
        now = int(time.time() * 1000)
        run = store.create_run(exp, "bench", now, [RunTag("task", TASK)], entry["run_id"])
        metrics = [Metric(name, value, now, 0) for name, value in entry["metrics"].items()]
        tags = [RunTag("config_hash", entry["config_hash"]), RunTag("checkpoint_path", entry["checkpoint_path"])]
        store.log_batch(run.info.run_id, metrics=metrics, params=[], tags=tags)
        store.update_run_info(run.info.run_id, RunStatus.FINISHED, now, entry["run_id"])

    def best(k):
        return store.search_runs([exp], f"tags.task = '{TASK}'", ViewType.ACTIVE_ONLY, max_results=1,
                                 order_by=[f"metrics.{METRIC} DESC"])

    return (register if op.startswith("register") else best), (t1 - t0) * 1000, (t2 - t1) * 1000


def run_child(system, op, path, count=1, tag="x", timeout=None):
    argv = [sys.executable, __file__, "--child", system, op, str(path), str(count), tag]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=CHILD_ENV)
    if proc.returncode:
        raise RuntimeError(f"{system} {op} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fresh(system, op, path, repeats, timeout=None):
    """op_ms of `repeats` fresh processes (None if one ran past `timeout` seconds), and the last child's info."""
    samples, info = [], {}
    for r in range(repeats):
        try:
            info = run_child(system, op, path, 1, f"{system}_{op}_{r}_{os.getpid()}", timeout)
        except subprocess.TimeoutExpired:
            return None, info
        samples.append(info["op_ms"][0])
    return samples, info


def warm(system, op, path, repeats, timeout=None):
    try:
        info = run_child(system, f"{op}-warm", path, repeats + 1, f"{system}_warm_{op}_{os.getpid()}", timeout)
    except subprocess.TimeoutExpired:
        return None
    return info["op_ms"][1:]


# ---- building registries directly ---------------------------------------------------------------------------
def build_ours(path: Path, n: int) -> None:
    from src.common.model_registry import normalize_entry
    from src.common.registry_format import dump_entry

    lines = [dump_entry(normalize_entry(make_entry(f"seed_{i:06d}", i))) for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"[\n  " + b",\n  ".join(lines) + b"\n]\n")


def build_mlflow(db: Path, n: int) -> None:
    import sqlite3
    import uuid

    code = ("import warnings, logging; warnings.simplefilter('ignore'); logging.disable(logging.WARNING)\n"
            "from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore\n"
            f"s = SqlAlchemyStore('sqlite:///{db}', '{db.parent / 'mlartifacts'}'); s.create_experiment('bench')\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=REPO, env=CHILD_ENV)
    run_child("mlflow", "register", db, 1, "template")
    conn = sqlite3.connect(db)
    template = conn.execute("SELECT run_uuid FROM runs").fetchone()[0]
    tables = {t: [d[1] for d in conn.execute(f"PRAGMA table_info({t})")]
              for t in ("runs", "tags", "params", "metrics", "latest_metrics")}
    rows = {t: conn.execute(f"SELECT * FROM {t} WHERE run_uuid = ?", (template,)).fetchall() for t in tables}
    out = {t: [] for t in tables}
    for i in range(n):
        rid, name = uuid.uuid4().hex, f"seed_{i:06d}"
        for t, cols in tables.items():
            for row in rows[t]:
                r = dict(zip(cols, row), run_uuid=rid)
                if t == "runs":
                    r.update(name=name, start_time=i, artifact_uri=r["artifact_uri"].replace(template, rid))
                elif t == "tags" and r["key"] == "mlflow.runName":
                    r["value"] = name
                elif t in ("metrics", "latest_metrics") and r["key"] == METRIC:
                    r["value"] = metric_value(i)
                out[t].append(tuple(r[c] for c in cols))
    for t, cols in tables.items():
        conn.executemany(f"INSERT INTO {t} VALUES ({','.join('?' * len(cols))})", out[t])
    conn.execute("DELETE FROM runs WHERE run_uuid = ?", (template,))
    for t in tables:
        conn.execute(f"DELETE FROM {t} WHERE run_uuid = ?", (template,))
    conn.commit()
    conn.close()


# ---- measuring -------------------------------------------------------------------------------------------------
def json_load_ms(path: Path, repeats: int = 5) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        with open(path, encoding="utf-8") as f:
            json.load(f)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def cli_ms(path: Path, args, repeats: int) -> list:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "src.cli.main", "registry", *args, "--registry", str(path)],
                              cwd=REPO, capture_output=True, env=CHILD_ENV)
        samples.append((time.perf_counter() - start) * 1000)
        assert proc.returncode == 0, proc.stderr
    return samples


def measure_size(n: int, tmp: Path, args) -> dict:
    path = tmp / f"ours_{n}" / "model_registry.json"
    build_ours(path, n)
    res = {"size": n, "mb": path.stat().st_size / 1e6, "json_load": json_load_ms(path)}
    first, _ = fresh("ours", "best", path, 1)
    res["first access"] = {"ours_new": first}
    reps = args.repeats if n < 100_000 else max(3, args.repeats // 3)
    for op in ("register", "best"):
        new, info = fresh("ours", op, path, reps)
        res[_name(op)] = {"ours_new": new, "ours_warm": warm("ours", op, path, args.warm_repeats),
                          "ours_import": info.get("import_ms")}
    res["cli list --task"] = {"ours_new": cli_ms(path, ["list", "--task", TASK], args.cli_repeats)}
    res["cli best"] = {"ours_new": cli_ms(path, ["best", "--task", TASK, "--metric", METRIC], args.cli_repeats)}
    if args.mlflow:
        measure_mlflow(n, tmp, args, res)
    res["json_valid"] = isinstance(json.loads(path.read_bytes()), list)
    return res


def measure_mlflow(n: int, tmp: Path, args, res: dict) -> None:
    db = tmp / f"mlflow_{n}" / "mlflow.db"
    db.parent.mkdir(parents=True)
    start = time.perf_counter()
    build_mlflow(db, n)
    res["mlflow_build_s"] = time.perf_counter() - start
    cap = args.mlflow_cap
    new, info = fresh("mlflow", "register", db, args.mlflow_repeats)
    res["register"].update(mlflow_new=new, mlflow_warm=warm("mlflow", "register", db, args.mlflow_repeats),
                           mlflow_import=info.get("import_ms"), mlflow_setup=info.get("setup_ms"))
    best_reps = args.mlflow_repeats if n <= 1000 else (3 if n <= 10_000 else 1)  # seconds each at 10k
    new, info = fresh("mlflow", "best", db, best_reps, timeout=cap)
    slow = new is None or max(new) > 60_000  # warm repeats would take minutes: measured once, not repeated
    warm_ms = None if slow else warm("mlflow", "best", db, best_reps, timeout=cap)
    res["find_best"].update(mlflow_new=new, mlflow_warm=warm_ms,
                            mlflow_cap=cap, mlflow_setup=info.get("setup_ms"))


def _name(op):
    return "find_best" if op == "best" else op


# ---- report ----------------------------------------------------------------------------------------------------
def p50(samples):
    return None if not samples else statistics.median(samples)


def p95(samples):
    return None if not samples else sorted(samples)[min(len(samples) - 1, int(0.95 * len(samples)))]


def fmt(value, width=9):
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.1f}"


def report(results, args) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nregistry bench: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average now {load}, "
          f"registries in {_filesystem(args.workdir or tempfile.gettempdir())}")
    print(f"{'size':>8} {'file MB':>8} {'json.load ms':>13}" + (f" {'MLflow build s':>15}" if args.mlflow else ""))
    for r in results:
        print(f"{r['size']:>8,} {r['mb']:>8.1f} {r['json_load']:>13.1f}"
              + (f" {r.get('mlflow_build_s', 0):>15.1f}" if args.mlflow else ""))
    print(f"\n{'operation':<17}{'size':>8} {'ours new':>9} {'(p95)':>8} {'MLflow new':>11} {'ratio':>7} "
          f"{'ours warm':>10} {'MLflow warm':>12} {'ratio':>7}  {'target':<22} met")
    for op in ("register", "find_best", "first access", "cli list --task", "cli best"):
        for r in results:
            row = r.get(op)
            if row is None:
                continue
            new, mnew = p50(row.get("ours_new")), p50(row.get("mlflow_new"))
            hot, mhot = p50(row.get("ours_warm")), p50(row.get("mlflow_warm"))
            capped = op == "find_best" and args.mlflow and row.get("mlflow_new") is None
            mlflow_new = f"{'>' + str(int(row['mlflow_cap'] * 1000)):>11}" if capped else fmt(mnew, 11)
            goal, how = TARGETS.get((op, r["size"]), (None, ""))
            limit = None if goal is None else (goal * r["json_load"] if "json" in how else goal)
            met = "" if limit is None else ("yes" if new <= limit else "NO")
            target = "" if limit is None else f"<= {limit:.1f} ({how})"
            print(f"{op:<17}{r['size']:>8,} {fmt(new)} {fmt(p95(row.get('ours_new')), 8)} {mlflow_new} "
                  f"{_ratio(new, mnew)} {fmt(hot, 10)} {fmt(mhot, 12)} {_ratio(hot, mhot)}  {target:<22} {met}")
    for r in results:
        reg = r["register"]
        print(f"\n{r['size']:,}: imports ours {fmt(reg.get('ours_import'), 0)} ms"
              + (f", MLflow {fmt(reg.get('mlflow_import'), 0)} ms + store construction "
                 f"{fmt(reg.get('mlflow_setup'), 0)} ms (not in 'new')" if args.mlflow else "")
              + f"; registry file still a JSON array: {r['json_valid']}")


def _filesystem(folder: str) -> str:
    best = ("", "?")
    try:
        with open("/proc/self/mounts") as f:  # the longest mount point that holds the folder
            for line in f:
                mount, kind = line.split()[1:3]
                if os.path.realpath(folder).startswith(mount) and len(mount) >= len(best[0]):
                    best = (mount, kind)
    except OSError:
        pass
    return f"{folder} ({best[1]})"


def _ratio(ours, theirs):
    return f"{'-':>7}" if ours is None or not theirs else f"{ours / theirs:>7.3f}"


# ---- concurrency -----------------------------------------------------------------------------------------------
def _writer(path: str, worker: int, count: int, start, out) -> None:
    sys.path.insert(0, str(REPO))
    from src.common.model_registry import ModelRegistry

    registry = ModelRegistry(path, lock_timeout=900)
    start.wait()
    times = []
    for j in range(count):
        t = time.perf_counter()
        registry.register(make_entry(f"conc_{worker}_{j:04d}", j))
        times.append((time.perf_counter() - t) * 1000)
    out.put(times)


def run_concurrent(path: Path, procs: int, per_proc: int) -> bool:
    from src.common.model_registry import ModelRegistry

    before = len(ModelRegistry(path))
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
    wall = time.perf_counter() - t0
    entries = json.loads(path.read_text(encoding="utf-8"))  # must parse: the file stayed valid
    new = sum(1 for e in entries if e["run_id"].startswith("conc_"))
    expected = procs * per_proc
    ok = (new == expected and len(entries) == before + expected == len(ModelRegistry(path))
          and [w.exitcode for w in workers] == [0] * procs)
    print(f"\n{procs} processes x {per_proc} registrations on {before:,} entries: {new} new (expected {expected}), "
          f"{len(entries):,} total, file valid JSON, register p50 {p50(times):.1f} ms p95 {p95(times):.1f} ms, "
          f"wall {wall:.1f} s ({expected / wall:.1f}/s) -> {'ok' if ok else 'FAILED'}")
    return ok


def main(argv=None) -> int:
    if argv is None and sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
        return 0
    sys.path.insert(0, str(REPO))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    ap.add_argument("--repeats", type=int, default=15, help="fresh processes per operation (a third at 100k)")
    ap.add_argument("--warm-repeats", type=int, default=30)
    ap.add_argument("--cli-repeats", type=int, default=5)
    ap.add_argument("--mlflow", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--mlflow-repeats", type=int, default=5)
    ap.add_argument("--mlflow-cap", type=float, default=300.0, help="seconds before an MLflow find_best is cut off")
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--per-proc", type=int, default=100)
    ap.add_argument("--concurrency-size", type=int, default=10_000)
    ap.add_argument("--workdir", help="folder (filesystem) to build the registries in (default: the temp folder)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="registry_bench_", dir=args.workdir) as tmp:
        # PYTHONDONTWRITEBYTECODE would make every child compile our modules from source.
        CHILD_ENV.pop("PYTHONDONTWRITEBYTECODE", None)
        CHILD_ENV["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        subprocess.run([sys.executable, "-m", "src.cli.main", "--help"], cwd=REPO, env=CHILD_ENV, capture_output=True)
        results = []
        for n in args.sizes:
            results.append(measure_size(n, Path(tmp), args))
            print(f"measured {n:,} entries", file=sys.stderr, flush=True)
        report(results, args)
        ok = all(r["json_valid"] for r in results)
        if args.procs:
            path = Path(tmp) / "concurrency" / "model_registry.json"
            build_ours(path, args.concurrency_size)
            ok = run_concurrent(path, args.procs, args.per_proc) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
