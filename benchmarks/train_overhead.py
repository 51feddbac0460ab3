"""Wall time and peak RSS of our detection train/evaluate scripts vs raw ultralytics doing the same work.

Ours: `python scripts/train.py ...` / `python scripts/evaluate.py ...` exactly as the README calls them, with
outputs, registry and caches under a temp dir. Raw: `YOLO(arch).train(**same arguments)` and `.val(...)` in their
own `python -c` processes. The raw train arguments come from the same resolved config through the detection task's
`_training_args` plus the fixed arguments engine.train_yolo adds, so both sides run the same ultralytics job; the
benchmark checks that (identical per-epoch results.csv, identical test metrics) and says so.

Raw evaluation rebuilds the model from *our* best_model.pth with plain ultralytics classes (DetectionModel +
load_state_dict, the documented recipe) rather than loading the raw run's best.pt: with save=False ultralytics
writes best.pt only when the last epoch is the best one, and it holds fp16 weights of possibly another epoch, so
predictions (hence NMS and matching work at conf=0.001) would differ. Same weights = same work.

Each process is timed from spawn to exit (interpreter start and imports included on both sides); peak RSS is
the child's ru_maxrss from os.wait4 (largest resident set of the process or any child it waited for), CPU time
its user+sys (less sensitive than wall time to other work on a shared machine). Runs alternate (ours, raw /
raw, ours, ...) after an unmeasured warm-up that creates the ultralytics label caches, font and our fingerprint
cache, so neither side pays one-off setup in the measured runs. Load average and the git state are printed.

Threads: on CPU ultralytics trains with min(8, cpu_count - 1) threads. The raw side keeps that rule; if
engine.train_yolo trains with another count, results differ in the last float digits (reductions split
differently) and the report says so. `--raw-threads all` trains raw on every core (torch's default) instead, and
`--threads N` sets OMP_NUM_THREADS in both children, which takes thread effects out of the comparison.

    python benchmarks/train_overhead.py [--pairs 5] [--eval-repeats 3] [--train 128 --val 32 --test 32] [--imgsz 160]
                                        [--epochs 5] [--batch 16] [--raw-threads all] [--threads 1] [--profile]

The default job (~25-30 s of training per run on 2 CPU cores) is small but not a toy: on a 12 s job a fixed
0.2 s is already 1.7 %, and run-to-run noise on a shared 2-core machine is +-5 %, hence 5 alternated pairs
(and 3 evaluation pairs per training pair). Ratios are medians of per-pair ratios (see report()).

Exit 1 when the wall-time ratio ours/raw (training or evaluation) is above 1.05 or a peak-RSS ratio is
above 1.10 (targets: wall <= 1.02, RSS <= 1.10).
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIG = "configs/detection_config.yaml"
SUBTASK = "vehicle_detection"
DATA_YAML = f"configs/datasets/{SUBTASK}.yaml"
TIME_TARGET, TIME_FAIL, RSS_TARGET = 1.02, 1.05, 1.10

# Raw ultralytics training: offline setup (same as ours, not overhead), then one YOLO(...).train call.
_RAW_TRAIN = """
import json, sys
sys.path.insert(0, sys.argv[3])
from src.tasks.detection.offline import configure_ultralytics
configure_ultralytics(sys.argv[2])
import torch
from ultralytics import YOLO
a = json.loads(sys.argv[1])
y = YOLO(a.pop("architecture"))
if a.pop("all_threads"):  # --raw-threads all: the thread policy engine.train_yolo applies
    n = torch.get_num_threads()
    y.add_callback("on_pretrain_routine_start", lambda trainer: torch.set_num_threads(n))
y.train(**a)
"""

# Raw ultralytics evaluation of the weights in our checkpoint (see the module docstring for why not best.pt).
_RAW_EVAL = """
import json, sys
sys.path.insert(0, sys.argv[3])
from src.tasks.detection.offline import configure_ultralytics
configure_ultralytics(sys.argv[2])
import torch
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel
a = json.loads(sys.argv[1])
ck = torch.load(a.pop("checkpoint"), map_location="cpu", weights_only=True)
spec = ck["model_spec"]
a["imgsz"] = spec["imgsz"]  # ours evaluates at the trained (stride-rounded) size too
m = DetectionModel(spec["model_yaml"], ch=3, nc=len(spec["names"]), verbose=False)
m.load_state_dict(ck["model_state"])
m.names = dict(enumerate(spec["names"]))
m.eval()
y = YOLO(a.pop("architecture"), task="detect")  # only the wrapper; its model is replaced below
m.args, m.task = y.model.args, y.task
y.model = m
r = y.val(**a)
print("RAW_METRICS " + json.dumps({"mAP50": float(r.box.map50), "mAP50-95": float(r.box.map)}))
"""


def timed_run(argv, env, log: Path):
    """Run argv to completion with output into `log`; return (wall s, peak RSS MiB, CPU s user+sys)."""
    with open(log, "w", encoding="utf-8") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # wait4 reaped it; keep Popen from waiting again
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{argv[:3]} failed with exit code {proc.returncode}; end of {log}:\n{tail}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime  # Linux ru_maxrss is in KiB


def overrides(args) -> list:
    t = "detection.training"
    return [f"{t}.epochs={args.epochs}", f"{t}.batch_size={args.batch}", f"{t}.image_size={args.imgsz}",
            f"detection.evaluation.batch_size={args.batch}", f"device={args.device}"]


def resolved_config(args):
    from src.common.config_manager import ConfigManager

    return ConfigManager(REPO / CONFIG, overrides(args), args.seed)


def raw_train_args(args, data_yaml: Path, project: Path) -> dict:
    """Exactly the ultralytics arguments engine.train_yolo passes for our resolved config."""
    from src.tasks.detection.task import ULTRALYTICS_DIR, _training_args

    cm = resolved_config(args)
    t = _training_args(cm.get_config())
    if t["weights"] is not None:
        raise SystemExit("the benchmark compares from-scratch training; the config sets detection.model.weights")
    return {**t["train_args"], "architecture": t["architecture"], "data": str(data_yaml), "seed": cm.seed,
            "device": args.device, "project": str(project), "name": ULTRALYTICS_DIR, "exist_ok": True,
            "deterministic": True, "amp": False, "val": True, "save": False,
            "all_threads": args.raw_threads == "all"}


def raw_eval_args(args, checkpoint: Path, data_yaml: Path, project: Path, name: str) -> dict:
    """What task.evaluate -> engine.evaluate_yolo pass to YOLO.val for our resolved config."""
    config = resolved_config(args).get_config()
    e = config["detection"]["evaluation"]
    return {"checkpoint": str(checkpoint), "architecture": "yolov8n.yaml", "data": str(data_yaml),
            "split": "test", "batch": e["batch_size"], "device": args.device, "conf": e["conf"], "iou": e["iou"],
            "plots": e["plots"], "project": str(project), "name": name, "exist_ok": True}


def make_data(root: Path, args) -> dict:
    """Synthetic splits plus the ultralytics data yamls the raw side uses (absolute paths, like ours)."""
    from src.common.atomic import atomic_write_text
    from src.common.yaml_io import dump_yaml
    from src.data.synthetic import make_detection_dataset

    summary = make_detection_dataset(SUBTASK, root / "data", args.train, args.val, args.test, seed=args.data_seed,
                                     image_size=args.imgsz)
    names = dict(enumerate(summary["names"]))
    split = {s: str(root / "data" / s / "images") for s in ("train", "val", "test")}
    train_yaml, test_yaml = root / "raw_train.yaml", root / "raw_test.yaml"
    atomic_write_text(train_yaml, dump_yaml({"train": split["train"], "val": split["val"], "names": names,
                                             "nc": len(names)}))
    # what ours writes for evaluation: every key on the test split, evaluated as split="test"
    atomic_write_text(test_yaml, dump_yaml({"train": split["test"], "val": split["test"], "test": split["test"],
                                            "names": names, "nc": len(names)}))
    return {"splits": split, "train_yaml": train_yaml, "test_yaml": test_yaml}


class Bench:
    """The four measured commands over one temp dir; `results` holds (kind, side, wall, rss, cpu, load1) rows."""

    def __init__(self, args, root: Path):
        self.args, self.root = args, root
        self.data = make_data(root, args)
        self.cache = root / "cache"
        self.env = dict(os.environ, STREET_SCENE_OUTPUT_DIR=str(root / "outputs"), STREET_SCENE_CACHE=str(self.cache),
                        STREET_SCENE_REGISTRY=str(root / "registry" / "model_registry.json"), YOLO_OFFLINE="1",
                        YOLO_AUTOINSTALL="0", PYTHONUNBUFFERED="1")
        self.env.pop("STREET_SCENE_SEED", None)
        if args.threads:  # torch's default intra-op threads in both children (ultralytics still picks its own)
            self.env["OMP_NUM_THREADS"] = str(args.threads)
        self.results, self.checks, self.last_run_dir, self.raw_dir = [], [], None, None

    def _record(self, kind, side, measured):
        self.results.append((kind, side, *measured, os.getloadavg()[0]))

    def ours_train(self, tag: str, measure=True, extra=()):
        a, s = self.args, self.data["splits"]
        argv = [sys.executable, *extra, "scripts/train.py", "--config", CONFIG, "--task", "detection",
                "--detection-task", SUBTASK, "--train-data", str(Path(s["train"]).parent), "--val-data",
                str(Path(s["val"]).parent), "--data-yaml", DATA_YAML, "--seed", str(a.seed), "--run-name", tag]
        argv += [x for o in overrides(a) for x in ("--config-override", o)]
        measured = timed_run(argv, self.env, self.root / f"{tag}.log")
        self.last_run_dir = max((self.root / "outputs").glob(f"*_{tag}"))
        if measure:
            self._record("train", "ours", measured)
        return measured[0]

    def raw_train(self, tag: str, measure=True):
        project = self.root / "raw" / tag
        argv = [sys.executable, "-c", _RAW_TRAIN, json.dumps(raw_train_args(self.args, self.data["train_yaml"],
                                                                            project)),
                str(self.cache / "ultralytics"), str(REPO)]
        measured = timed_run(argv, self.env, self.root / f"{tag}.log")
        self.raw_dir = project / "ultralytics"
        if measure:
            self._record("train", "raw", measured)

    def ours_eval(self, tag: str, measure=True, extra=()):
        argv = [sys.executable, *extra, "scripts/evaluate.py", "--config", CONFIG, "--task", "detection",
                "--detection-task", SUBTASK, "--test-data", str(Path(self.data["splits"]["test"]).parent),
                "--data-yaml", DATA_YAML,
                "--checkpoint", str(self.last_run_dir / "best_model.pth"), "--json"]
        argv += [x for o in overrides(self.args) for x in ("--config-override", o)]
        log = self.root / f"{tag}.log"
        measured = timed_run(argv, self.env, log)
        if measure:
            self._record("eval", "ours", measured)
        text = log.read_text(encoding="utf-8")
        found = json.loads(text[text.rindex("\n{\n"):])["metrics"]  # --json: the last top-level object
        self.ours_metrics = {"mAP50": found["test/mAP50"], "mAP50-95": found["test/mAP50-95"]}

    def raw_eval(self, tag: str, measure=True):
        spec = raw_eval_args(self.args, self.last_run_dir / "best_model.pth", self.data["test_yaml"],
                             self.root / "raw_eval", tag)
        argv = [sys.executable, "-c", _RAW_EVAL, json.dumps(spec), str(self.cache / "ultralytics"), str(REPO)]
        log = self.root / f"{tag}.log"
        measured = timed_run(argv, self.env, log)
        if measure:
            self._record("eval", "raw", measured)
        line = next(x for x in log.read_text(encoding="utf-8").splitlines() if x.startswith("RAW_METRICS "))
        self.raw_metrics = json.loads(line.split(" ", 1)[1])

    def check_same_work(self, pair: int) -> None:
        """Both sides should train and evaluate identically, or the timing compares different jobs."""
        ours = _results_rows(self.last_run_dir / "ultralytics" / "results.csv")
        raw = _results_rows(self.raw_dir / "results.csv")
        if len(ours) != len(raw) or len(ours) != self.args.epochs:
            raise SystemExit(f"pair {pair}: ours ran {len(ours)} epochs, raw {len(raw)}, asked {self.args.epochs}")
        diff = max(abs(float(o[k]) - float(r[k])) / max(abs(float(r[k])), 1e-12) if o[k] != r[k] else 0.0
                   for o, r in zip(ours, raw) for k in r)
        same_eval = all(self.ours_metrics[k] == self.raw_metrics[k] for k in ("mAP50", "mAP50-95"))
        loops = (_loop_seconds(self.last_run_dir / "ultralytics" / "results.csv"),
                 _loop_seconds(self.raw_dir / "results.csv"))
        self.checks.append((pair, diff, same_eval, self.raw_metrics["mAP50-95"], loops))


def _results_rows(path: Path) -> list:
    """ultralytics' per-epoch results.csv without its wall-clock column."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k.strip(): v.strip() for k, v in row.items() if k.strip() != "time"} for row in csv.DictReader(f)]


def _loop_seconds(path: Path) -> float:
    """Seconds from ultralytics' training start to the end of the last epoch (its results.csv `time`)."""
    with open(path, newline="", encoding="utf-8") as f:
        return float([{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)][-1]["time"])


def run_pairs(bench: Bench, pairs: int, eval_repeats: int) -> None:
    """`pairs` training pairs; after each, `eval_repeats` evaluation pairs of its checkpoint (evaluations are
    short, so their ratios need more samples). The order flips every pair."""
    flip = 0
    for i in range(1, pairs + 1):
        sides = ("ours", "raw") if i % 2 else ("raw", "ours")
        for side in sides:
            (bench.ours_train if side == "ours" else bench.raw_train)(f"{side}_train_{i}")
        for j in range(1, eval_repeats + 1):
            flip += 1
            for side in (("ours", "raw") if flip % 2 else ("raw", "ours")):
                (bench.ours_eval if side == "ours" else bench.raw_eval)(f"{side}_eval_{i}_{j}")
        bench.check_same_work(i)
        print(f"pair {i}/{pairs} done (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)


def report(bench: Bench, load_before, load_after, code_before) -> dict:
    """Print the side-by-side table and ratios; return {kind: (wall ratio, peak-RSS ratio)}, each the median of
    the per-pair ratios ours/raw: runs of a pair are back to back, so the slow drift of a shared machine (other
    tenants, thermal state) mostly cancels within a pair, while it does not between the two sides' medians
    (printed too, as "ratio of medians")."""
    a = bench.args
    print(f"job: {a.train} train / {a.val} val / {a.test} test images, imgsz {a.imgsz}, {a.epochs} epochs, "
          f"batch {a.batch}, seed {a.seed}, device {a.device}, {a.pairs} pairs, cpus {os.cpu_count()}")
    code_after = _git_state()
    print(f"code: {code_before}" + ("" if code_after == code_before else f"; CHANGED DURING THE RUN to {code_after}"))
    print(f"OMP_NUM_THREADS: {a.threads or os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"raw training threads: {a.raw_threads} (ultralytics: min(8, cpu_count - 1) on CPU; all: every core)")
    print(f"load average (1/5/15 min) before: {_fmt_load(load_before)}  after: {_fmt_load(load_after)}")
    print(f"{'kind':5s} {'#':>2s} | {'wall ours':>9s} {'raw':>7s} {'ratio':>6s} | {'RSS MiB ours':>12s} {'raw':>7s} "
          f"{'ratio':>6s} | {'CPU s ours':>10s} {'raw':>7s} {'ratio':>6s} | load1 ours/raw")
    ratios = {}
    for kind in ("train", "eval"):
        ours = [r for r in bench.results if r[:2] == (kind, "ours")]
        raw = [r for r in bench.results if r[:2] == (kind, "raw")]
        for i, (o, r) in enumerate(zip(ours, raw), 1):
            cells = " | ".join(f"{o[c]:{w}.{d}f} {r[c]:7.{d}f} {o[c] / r[c]:6.3f}" for c, w, d in
                               ((2, 9, 2), (3, 12, 1), (4, 10, 2)))
            print(f"{kind:5s} {i:2d} | {cells} | {o[5]:5.2f}/{r[5]:5.2f}")
        paired = [sorted(o[c] / r[c] for o, r in zip(ours, raw)) for c in (2, 3, 4)]
        med = [statistics.median(p) for p in paired]
        of_medians = statistics.median(x[2] for x in ours) / statistics.median(x[2] for x in raw)
        ratios[kind] = (med[0], med[1])
        print(f"{kind}: wall ours/raw = {med[0]:.3f} (median of {len(paired[0])} per-pair ratios, range "
              f"{paired[0][0]:.3f}-{paired[0][-1]:.3f}; target <= {TIME_TARGET}, fail > {TIME_FAIL}); ratio of "
              f"medians {of_medians:.3f}; median extra {statistics.median(o[2] - r[2] for o, r in zip(ours, raw)):+.2f}"
              f" s; peak RSS = {med[1]:.3f} (target <= {RSS_TARGET}); CPU time = {med[2]:.3f}")
    for pair, diff, same_eval, map_, loops in bench.checks:
        train = "identical" if diff == 0 else f"max relative difference {diff:.2e}"
        print(f"pair {pair}: epoch loop (ultralytics' results.csv time) ours {loops[0]:.2f} s, raw {loops[1]:.2f} s; "
              f"per-epoch results ours vs raw: {train}; test metrics identical: {same_eval} (mAP50-95 {map_:.4f})")
    return ratios


def _git_state() -> str:
    def git(*argv):
        return subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True).stdout.rstrip("\n")

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "src", "configs", "scripts").splitlines()]
    return f"commit {git('rev-parse', '--short', 'HEAD')}, uncommitted in src/configs/scripts: {dirty or 'none'}"


def _fmt_load(load) -> str:
    return "/".join(f"{x:.2f}" for x in load)


# What ours does that raw ultralytics does not (plus train_yolo, which is ultralytics' own training).
_PHASES = (
    ("config load + overrides + hash", "common/config_manager.py", "__init__"),
    ("data validation + fingerprints", "tasks/detection/task.py", "prepare_train"),
    ("  of which ultralytics pre-check (import + model build)", "tasks/detection/task.py", "_check_with_ultralytics"),
    ("registry check before training", "common/model_registry.py", "list_entries"),
    ("run dir + config/metadata/environment.txt/git", "pipelines/runner.py", "_start_run"),
    ("  of which environment.txt", "common/metadata.py", "environment_lines"),
    ("  of which metadata + git", "common/metadata.py", "collect_metadata"),
    ("seed_everything (torch lazy imports too)", "common/seeding.py", "seed_everything"),
    ("ultralytics training (train_yolo)", "tasks/detection/engine.py", "train_yolo"),
    ("  of which our per-epoch callback", "tasks/detection/task.py", "on_epoch"),
    ("    metrics.csv row", "pipelines/context.py", "log_epoch"),
    ("    checkpoint files", "pipelines/context.py", "save_checkpoint"),
    ("curves PNG + final checks", "pipelines/runner.py", "_finish_artifacts"),
    ("final metadata update", "common/metadata.py", "update_metadata"),
    ("best_model.pth sha256", "common/checkpoint.py", "file_sha256"),
    ("registry write", "common/model_registry.py", "register"),
)


def profile_ours(bench: Bench, top: int, kind: str) -> None:
    """One cProfile'd run of ours (kind train: with the time of the phases raw ultralytics doesn't have),
    then our top functions."""
    import pstats

    prof = bench.root / f"ours_{kind}.prof"
    start = time.perf_counter()
    if kind == "train":
        bench.ours_train("profile", measure=False, extra=("-m", "cProfile", "-o", str(prof)))
    else:
        bench.ours_eval("profile_eval", measure=False, extra=("-m", "cProfile", "-o", str(prof)))
    wall = time.perf_counter() - start
    stats = pstats.Stats(str(prof)).stats
    src = str(REPO / "src") + os.sep
    ours = {(fn[0][len(src):], fn[2]): (v[1], v[3]) for fn, v in stats.items() if fn[0].startswith(src)}
    print(f"\nprofiled {kind} run of ours: {wall:.2f} s wall under cProfile (which slows Python-heavy code).")
    if kind == "train":
        print("Phases (cumulative s, calls; lazy imports of torch/matplotlib land in whichever phase imports first, "
              "and raw pays them too):")
        for label, path, name in _PHASES:
            calls, cum = ours.get((path, name), (0, 0.0))
            print(f"  {cum:7.3f} s {calls:4d}x  {label}  [{path}:{name}]")
    print(f"our functions by cumulative time (nested; top {top}):")
    for (path, name), (calls, cum) in sorted(ours.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"  {cum:7.3f} s {calls:4d}x  src/{path}:{name}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=5, help="measured ours/raw training pairs (alternating order)")
    p.add_argument("--eval-repeats", type=int, default=3, help="evaluation pairs after each training pair")
    p.add_argument("--train", type=int, default=128, help="synthetic training images")
    p.add_argument("--val", type=int, default=32, help="synthetic validation images")
    p.add_argument("--test", type=int, default=32, help="synthetic test images")
    p.add_argument("--imgsz", type=int, default=160, help="image size (drawn and trained)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=42, help="training seed (both sides)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic dataset")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (both sides)")
    p.add_argument("--raw-threads", choices=("ultralytics", "all"), default="ultralytics",
                   help="raw side's CPU training threads: ultralytics' default, or every core like ours")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for both sides (default: unset)")
    p.add_argument("--no-warmup", action="store_true", help="skip the unmeasured warm-up pair")
    p.add_argument("--profile", action="store_true", help="also profile one run of ours even when within target")
    p.add_argument("--top", type=int, default=15, help="rows of the profile to print")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a removed temp dir)")
    args = p.parse_args(argv)
    if args.pairs < 1 or args.eval_repeats < 1:
        p.error("--pairs and --eval-repeats must be >= 1")
    load_before, code_before = os.getloadavg(), _git_state()
    with tempfile.TemporaryDirectory(prefix="train_overhead_") as tmp:
        root = Path(args.keep).resolve() if args.keep else Path(tmp)
        bench = Bench(args, root)
        if not args.no_warmup:  # label caches, font, settings.json, fingerprint cache, page cache
            bench.ours_train("warmup", measure=False)
            bench.raw_train("warmup_raw", measure=False)
            bench.ours_eval("warmup_eval", measure=False)
            bench.raw_eval("warmup_raw_eval", measure=False)
        run_pairs(bench, args.pairs, args.eval_repeats)
        load_after = os.getloadavg()
        ratios = report(bench, load_before, load_after, code_before)
        failures = [f"{kind} wall-time ratio {wall:.3f} > {TIME_FAIL}" for kind, (wall, _) in ratios.items()
                    if wall > TIME_FAIL]
        failures += [f"{kind} peak-RSS ratio {rss:.3f} > {RSS_TARGET}" for kind, (_, rss) in ratios.items()
                     if rss > RSS_TARGET]
        for kind in ratios:
            if args.profile or any(f.startswith(kind) for f in failures):
                profile_ours(bench, args.top, kind)
    for failure in failures:
        print(f"FAIL: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
