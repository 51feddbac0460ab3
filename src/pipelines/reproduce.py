"""`reproduce RUN`: re-train a past run from what it recorded and verify that the result is the same.

1. Check: the recorded code (git), dataset fingerprints, package versions, device and determinism settings
   against the current ones; every difference is printed. Code or data differences refuse (exit 2) unless allowed.
2. Re-train from the run's `config.yaml`, seed and data paths into a new run dir (`<name>-repro`) whose metadata
   says `reproduces: <run id>`; `epochs=K` stops after epoch K with the schedule of the full run.
3. Compare weights, metric trace and best metrics (src.pipelines.compare); the report is returned, printed by the
   caller and saved as `reproduce.json` in the new run dir.
Nothing here knows a task: it reads `task`, `subtask`, `seed` and `data` from the run's metadata.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from src.common.atomic import atomic_write_text
from src.common.errors import UserError
from src.pipelines import reproduce_checks as checks
from src.pipelines.compare import DIVERGED, compare_runs, format_comparison, read_trace
from src.common.run_dir import BEST_CHECKPOINT, CONFIG_FILE, epoch_checkpoint_name
from src.common.report import note

REPORT_FILE = "reproduce.json"
NAME_SUFFIX = "-repro"
CATEGORIES = ("code", "data", "config", "environment", "device", "determinism")


class ReproduceRefused(UserError):
    """Code or data differ from what the run recorded and the user did not allow it."""


@dataclass
class ReproduceRequest:
    run: str  # run id (under the output root) or run dir
    epochs: Optional[int] = None  # re-run only the first K epochs
    allow_data_change: bool = False
    allow_code_change: bool = False
    rtol: float = 1e-6
    atol: float = 0.0
    overrides: Sequence[str] = ()  # deliberate config changes ("what if"); reported as config differences
    output_dir: Optional[Path] = None
    registry_path: Optional[Path] = None


@dataclass
class _Original:
    ref: str
    run_dir: Path
    meta: Dict[str, Any]
    epochs_done: int
    epochs: Optional[int]  # None: the whole run
    trained_config: Dict[str, Any] = field(default_factory=dict)


def reproduce(request: ReproduceRequest) -> Dict[str, Any]:
    """Check, re-train and compare; returns the report (see module docstring). Raises UserError on bad input."""
    from src.common.metadata import read_metadata
    from src.pipelines.runner import TrainRequest, train

    _check_tolerances(request.rtol, request.atol)
    original = load_original(request.run, request.epochs)
    plan = preflight(original, request.overrides)
    note("\n".join(format_checks(original, plan)))
    refuse_unless_allowed(original, plan["differences"], request)
    meta = original.meta
    result = train(TrainRequest(
        config_path=original.run_dir / CONFIG_FILE, task=meta["task"], subtask=meta["subtask"],
        train_data=plan["train"], val_data=plan["val"], data_yaml=plan["data_yaml"],
        run_name=_repro_name(str(meta.get("run_name") or original.run_dir.name)), overrides=request.overrides,
        seed=meta["seed"], output_dir=request.output_dir, registry_path=request.registry_path,
        extra_metadata={"reproduces": _run_id(original)}, stop_after_epoch=original.epochs,
    ))
    new_meta = read_metadata(result.run_dir)
    comparison = compare_runs(original.run_dir, result.run_dir, request.rtol, request.atol, epochs=original.epochs,
                              best_original=_result_metrics(meta), best_reproduction=_result_metrics(new_meta))
    report = {
        "original": {"run_id": _run_id(original), "run_dir": str(original.run_dir)},
        "reproduction": {"run_id": result.run_id, "run_dir": str(result.run_dir)},
        **comparison,
        "epochs_original": original.epochs_done,
        "differences": plan["differences"], "notes": plan["notes"],
        "allowed": {"data_change": request.allow_data_change, "code_change": request.allow_code_change},
        "config_hash": {"original": meta.get("config_hash"), "reproduction": new_meta.get("config_hash")},
    }
    atomic_write_text(result.run_dir / REPORT_FILE, to_json(report))
    return report


def _check_tolerances(rtol: float, atol: float) -> None:
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < float("inf"):
            raise UserError(f"--{name} must be a finite number >= 0, got {value!r}")


def load_original(ref: str, epochs: Optional[int]) -> _Original:
    """The run to reproduce, checked: completed, recorded task/seed/trace, a loadable reference checkpoint."""
    from src.common.checkpoint import load_checkpoint
    from src.common.metadata import read_metadata
    from src.common.run_dir import resolve_run

    run_dir = resolve_run(str(ref))
    meta = read_metadata(run_dir)
    if meta.get("status") != "completed":
        raise UserError(f"run {ref} has status {meta.get('status')!r}; only completed runs can be reproduced")
    missing = [k for k in ("task", "subtask", "seed") if meta.get(k) is None]
    if missing:
        raise UserError(f"run {ref} metadata.yaml lacks {', '.join(missing)} (made by an older street-scene); "
                        "it cannot be re-trained automatically")
    trace = read_trace(run_dir)
    if not trace:
        raise UserError(f"run {ref} has no per-epoch metrics (metrics.csv); nothing to compare a re-run with")
    done = max(trace)
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= done):
        raise UserError(f"--epochs must be an integer from 1 to {done} (the epochs run {ref} completed), got {epochs}")
    epochs = None if epochs == done else epochs
    reference = run_dir / (BEST_CHECKPOINT if epochs is None else epoch_checkpoint_name(epochs))
    if not reference.is_file():
        kept = sorted(int(p.stem.rsplit("_", 1)[1]) for p in run_dir.glob("checkpoint_epoch_*.pth")
                      if p.stem.rsplit("_", 1)[1].isdigit())
        raise UserError(f"run {ref} has no {reference.name} to compare with (epoch checkpoints kept: "
                        f"{kept or 'none'}); choose --epochs among those")
    try:
        ckpt = load_checkpoint(reference)
    except UserError as exc:
        raise UserError(f"cannot reproduce {ref}: {exc}") from None
    if ckpt["task"] != meta["task"]:
        raise UserError(f"run {ref}: {reference.name} is a {ckpt['task']} checkpoint but the run is {meta['task']}")
    return _Original(ref=str(ref), run_dir=run_dir, meta=meta, epochs_done=done, epochs=epochs,
                     trained_config=ckpt["config"])


def preflight(original: _Original, overrides: Sequence[str]) -> Dict[str, Any]:
    """Differences between what the run recorded and now, plus the data paths the re-run will use."""
    from src.pipelines.job import open_job, resolve_device

    meta, run_dir = original.meta, original.run_dir
    job = open_job(run_dir / CONFIG_FILE, meta["task"], meta["subtask"], overrides, meta["seed"])
    cm = job.cm
    device = resolve_device(job.config["device"])
    train, val, data_yaml = checks.data_paths(meta, original.ref)
    prepared = job.task_module.prepare_train(job.config, job.subtask, train, val, data_yaml, device)
    fingerprints = prepared.fingerprints
    code, notes = checks.current_code(run_dir, meta)
    differences = {"code": code, "data": checks.data_differences(meta, fingerprints),
                   "config": checks.config_differences(cm, original.trained_config),
                   **checks.current_environment(run_dir, meta, device, cm.seed)}
    return {"differences": {k: differences[k] for k in CATEGORIES}, "notes": notes,
            "train": train, "val": val, "data_yaml": data_yaml}


def refuse_unless_allowed(original: _Original, differences: Dict[str, List[str]],
                          request: ReproduceRequest) -> None:
    problems = []
    if differences["data"] and not request.allow_data_change:
        problems.append("the dataset differs from the run's (--allow-data-change)")
    if differences["code"] and not request.allow_code_change:
        problems.append("the code differs from the run's (--allow-code-change)")
    if problems:
        raise ReproduceRefused(f"not reproducing {original.ref}: {' and '.join(problems)}; see the differences "
                               "above, or pass the flag named to re-train anyway")


def format_checks(original: _Original, plan: Dict[str, Any]) -> List[str]:
    span = (f"first {original.epochs} of {original.epochs_done} epochs" if original.epochs
            else f"{original.epochs_done} epochs")
    lines = [f"Reproducing run {_run_id(original)} ({span}) from {original.run_dir}"]
    for category in CATEGORIES:
        found = plan["differences"][category]
        lines.append(f"{category}: {'same as recorded' if not found else f'{len(found)} difference(s)'}")
        lines += [f"  {line}" for line in found]
    lines += [f"note: {note}" for note in plan["notes"]]
    return lines


def format_report(report: Dict[str, Any]) -> str:
    lines = [f"Original:     {report['original']['run_dir']}",
             f"Reproduction: {report['reproduction']['run_dir']}"]
    for category in CATEGORIES:
        if report["differences"][category]:
            lines.append(f"{category} differed: " + "; ".join(report["differences"][category]))
    return "\n".join(lines + format_comparison(report))


def exit_code(report: Dict[str, Any]) -> int:
    return 1 if report["verdict"] == DIVERGED else 0


def to_json(report: Dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str) + "\n"


def _repro_name(name: str) -> str:
    return name[: 100 - len(NAME_SUFFIX)] + NAME_SUFFIX  # run names are at most 100 characters


def _run_id(original: _Original) -> str:
    return str(original.meta.get("run_id") or original.run_dir.name)


def _result_metrics(meta: Dict[str, Any]) -> Dict[str, Any]:
    result = meta.get("result")
    metrics = result.get("metrics") if isinstance(result, dict) else None
    return metrics if isinstance(metrics, dict) else {}
