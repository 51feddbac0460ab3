"""`check-determinism`: train the same short run twice and say whether this setup repeats itself.

Each training runs in its own fresh Python process (so per-process state such as hash seeds or lazily
initialised kernels gets a chance to differ), with its run dir and registry in a temporary folder that is deleted
afterwards: the user's outputs and registry are never touched. The run is cut to `epochs` (default 1) with the
runner's `stop_after_epoch`, not by changing the config, so the config (and its hash) is exactly the user's and
the check works for every task. Labels: `bitwise` (equal weights and metrics), `within tolerance`,
`nondeterministic`.
"""

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from src.common.errors import UserError
from src.common.report import note
from src.pipelines.compare import BIT_EXACT, DIVERGED, compare_runs

LABELS = {BIT_EXACT: "bitwise", "within tolerance": "within tolerance", DIVERGED: "nondeterministic"}
METADATA_KEY = "determinism_check"
_RUNS = 2


@dataclass
class DeterminismRequest:
    config_path: str
    task: str
    subtask: Optional[str]
    train_data: str
    val_data: str
    data_yaml: Optional[str] = None
    overrides: Sequence[str] = ()
    seed: Optional[int] = None
    epochs: int = 1
    rtol: float = 1e-6
    atol: float = 0.0


def check_determinism(request: DeterminismRequest, record_run: Optional[str] = None) -> Dict[str, Any]:
    """Train twice, compare, and return the report; with `record_run` also store it in that run's metadata."""
    from src.common.metadata import read_metadata, update_metadata
    from src.common.run_dir import resolve_run

    request = _validated(request)
    record_dir = resolve_run(record_run) if record_run else None  # a bad --record fails before any training
    with tempfile.TemporaryDirectory(prefix="street-scene-determinism-") as tmp:
        run_dirs = [_train_in_subprocess(request, Path(tmp), i) for i in range(1, _RUNS + 1)]
        metas = [read_metadata(d) for d in run_dirs]
        best = [(m.get("result") or {}).get("metrics") or {} for m in metas]
        comparison = compare_runs(run_dirs[0], run_dirs[1], request.rtol, request.atol,
                                  best_original=best[0], best_reproduction=best[1])
    report = _report(request, comparison, metas)
    if record_dir is not None:
        run_meta = read_metadata(record_dir)
        report["matches_run_config"] = run_meta.get("config_hash") == report["config_hash"]
        update_metadata(record_dir, **{METADATA_KEY: report})
        report["recorded_in"] = str(record_dir)
    return report


def _validated(request: DeterminismRequest) -> DeterminismRequest:
    """Everything a training would refuse, refused here first, in this process; paths made absolute."""
    from src.pipelines.job import open_job, resolve_device

    if isinstance(request.epochs, bool) or not isinstance(request.epochs, int) or request.epochs < 1:
        raise UserError(f"--epochs must be a positive integer, got {request.epochs!r}")
    for name in ("rtol", "atol"):
        value = getattr(request, name)
        if not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise UserError(f"--{name} must be a finite number >= 0, got {value!r}")
    job = open_job(request.config_path, request.task, request.subtask, request.overrides, request.seed)
    cm, subtask = job.cm, job.subtask
    device = resolve_device(job.config["device"])
    job.task_module.prepare_train(job.config, subtask, request.train_data, request.val_data, request.data_yaml,
                                  device)
    absolute = {k: str(Path(getattr(request, k)).expanduser().resolve()) if getattr(request, k) else None
                for k in ("config_path", "train_data", "val_data", "data_yaml")}
    # The seed is pinned here so both processes use the same one whatever STREET_SCENE_SEED they see.
    return DeterminismRequest(**{**asdict(request), **absolute, "subtask": subtask, "seed": cm.seed,
                                 "overrides": list(request.overrides)})


def _train_in_subprocess(request: DeterminismRequest, tmp: Path, index: int) -> Path:
    out_root = tmp / f"run{index}"
    log = tmp / f"run{index}.log"
    env = dict(os.environ, STREET_SCENE_OUTPUT_DIR=str(out_root),
               STREET_SCENE_REGISTRY=str(tmp / "registry" / "model_registry.json"))
    code_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (code_root, env.get("PYTHONPATH")) if p)
    note(f"check-determinism: training run {index} of {_RUNS} ({request.epochs} epoch(s)) in a new process ...")
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.run([sys.executable, "-m", __name__, json.dumps(asdict(request))], env=env,
                              stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    text = log.read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        errors = [line for line in text.splitlines() if line.startswith("error: ")]
        if proc.returncode == UserError.exit_code and errors:
            raise UserError(errors[-1].removeprefix("error: "))
        raise RuntimeError(f"determinism check run {index} failed (exit {proc.returncode}):\n{text[-3000:]}")
    found = [p for p in out_root.iterdir() if p.is_dir()] if out_root.is_dir() else []
    if len(found) != 1:
        raise RuntimeError(f"determinism check run {index} left {len(found)} run dirs in {out_root}")
    return found[0]


def _report(request: DeterminismRequest, comparison: Dict[str, Any], metas) -> Dict[str, Any]:
    from src.common.metadata import now_iso

    settings = [m.get("determinism") or {} for m in metas]
    first = metas[0]
    return {
        "label": LABELS[comparison["verdict"]],
        "checked_at": now_iso(),
        "epochs": comparison["epochs"],  # fewer than asked when the config trains fewer
        "seed": request.seed,
        "config_hash": first.get("config_hash"),
        "task": first.get("task"), "subtask": first.get("subtask"),
        "settings": settings[0],
        "settings_second_run": settings[1] if settings[1] != settings[0] else None,
        "device": first.get("device"), "cpu_model": first.get("cpu_model"), "gpu_names": first.get("gpu_names"),
        "versions": {k: first.get(k) for k in ("pytorch_version", "torchvision_version", "ultralytics_version",
                                               "python_version") if k in first},
        "git_commit": first.get("git_commit"), "git_dirty": first.get("git_dirty"),
        "rtol": request.rtol, "atol": request.atol,
        "weights_equal": comparison["weights"]["equal"],
        "first_divergent_epoch": comparison["first_divergent_epoch"],
        "comparison": {k: comparison[k] for k in ("verdict", "weights", "trace", "best_metrics")},
    }


def format_report(report: Dict[str, Any]) -> str:
    lines = [f"determinism: {report['label']}",
             f"  task {report['task']}/{report['subtask']}, config {report['config_hash']}, seed {report['seed']}, "
             f"{report['epochs']} epoch(s) trained twice in separate processes on {report['device']} "
             f"({report['cpu_model']}{', ' + ', '.join(report['gpu_names']) if report['gpu_names'] else ''})",
             "  settings in force (recorded by the runs):"]
    lines += [f"    {k}: {v}" for k, v in report["settings"].items()]
    if report["settings_second_run"]:
        lines.append("  the second run recorded different settings: " + json.dumps(report["settings_second_run"]))
    weights = report["comparison"]["weights"]["compared"]
    lines += [f"  weights {w['checkpoint']}: {'equal' if w['equal'] else 'differ'}" for w in weights]
    diffs = report["comparison"]["trace"]["differences"]
    lines += [f"  epoch {d['epoch']} {d['key']}: {d['original']} vs {d['reproduction']}" for d in diffs[:10]]
    if report.get("recorded_in"):
        note = "" if report.get("matches_run_config") else " (note: that run was trained with a different config)"
        lines.append(f"  recorded as {METADATA_KEY} in {report['recorded_in']}/metadata.yaml{note}")
    return "\n".join(lines)


def exit_code(report: Dict[str, Any]) -> int:
    return 1 if report["label"] == LABELS[DIVERGED] else 0


def _child_main(argv: Sequence[str]) -> int:
    """One training of the check, in a fresh process (run as `python -m src.pipelines.determinism_check JSON`)."""
    from src.common.error_lines import run_command
    from src.pipelines.runner import TrainRequest, train

    request = DeterminismRequest(**json.loads(argv[0]))

    def run(_args) -> int:
        train(TrainRequest(config_path=Path(request.config_path), task=request.task, subtask=request.subtask,
                           train_data=request.train_data, val_data=request.val_data, data_yaml=request.data_yaml,
                           run_name="determinism-check", overrides=request.overrides, seed=request.seed,
                           stop_after_epoch=request.epochs))
        return 0

    return run_command(run, None)


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
