"""`street-scene runs`: what state every run directory is in, and `runs finalize` for runs whose process died.

A run is `completed` or `failed` when its metadata says so. One that says `running` is `running` while its
process holds the run lock, and `stale` once the lock is free (the process died: SIGKILL, OOM, a lost node). A
directory without metadata.yaml is `empty` (killed before it recorded anything).

Finalizing a stale run, holding its lock: a run whose last epoch's checkpoint is on disk (its checkpoint says
`final`) is completed from what it wrote (best model, metrics.csv) and registered; any other is marked `failed`,
and can be resumed from its newest epoch checkpoint where the task supports --resume.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from src.common.errors import UserError
from src.common.metadata import now_iso, read_metadata, update_metadata
from src.common.run_dir import BEST_CHECKPOINT, METADATA_FILE, METRICS_FILE, epoch_of_checkpoint, read_metrics_csv

EMPTY, STALE, RUNNING = "empty", "stale", "running"


@dataclass
class RunState:
    run_id: str
    run_dir: Path
    status: str  # completed / failed / running / stale / empty / damaged
    subtask: Optional[str] = None
    epochs: int = 0  # rows in metrics.csv
    heartbeat: Optional[str] = None
    note: str = ""  # what the user can do about it

    def as_dict(self) -> Dict[str, Any]:
        return {"run_id": self.run_id, "run_dir": str(self.run_dir), "status": self.status, "subtask": self.subtask,
                "epochs": self.epochs, "heartbeat": self.heartbeat, "note": self.note}


def run_state(run_dir: Path) -> RunState:
    from src.common.run_liveness import lock_is_free

    run_dir = Path(run_dir)
    if not (run_dir / METADATA_FILE).is_file():
        return RunState(run_dir.name, run_dir, EMPTY, note="killed before it recorded anything; nothing to keep, "
                                                            "delete the folder")
    try:
        meta = read_metadata(run_dir)
    except UserError as exc:
        return RunState(run_dir.name, run_dir, "damaged", note=str(exc))
    status = str(meta.get("status"))
    state = RunState(str(meta.get("run_id") or run_dir.name), run_dir, status, meta.get("subtask"),
                     len(read_metrics_csv(run_dir / METRICS_FILE)), meta.get("heartbeat_at"))
    who = f" (pid {meta.get('pid')} on {meta.get('hostname')})" if meta.get("pid") else ""
    if status == RUNNING and lock_is_free(run_dir):
        state.status = STALE
        state.note = f"its process died{who}; run `street-scene runs finalize {state.run_id}`"
    elif status == RUNNING:
        state.note = f"training now{who}"
    elif status == "failed":
        state.note = _failed_note(run_dir, meta)
    return state


def _failed_note(run_dir: Path, meta: Dict[str, Any]) -> str:
    error = str(meta.get("error") or "").splitlines()[0:1]
    resumable = meta.get("task") == "segmentation" and any(run_dir.glob("checkpoint_epoch_*.pth"))
    hint = f"; resume with --resume {run_dir.name}" if resumable else ""
    return (error[0][:120] if error else "failed") + hint


def list_runs(root: Optional[Path] = None) -> List[RunState]:
    """Every run directory under the output root, oldest first."""
    from src.common.run_dir import output_root

    root = output_root(root)
    if not root.is_dir():
        return []
    return [run_state(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]


def finalize_run(ref: str, registry=None, root: Optional[Path] = None) -> RunState:
    """Complete and register a stale run whose training finished, or mark it failed; see the module docstring."""
    from src.common.model_registry import ModelRegistry
    from src.common.run_liveness import held, remove_temp_files

    run_dir = _find(ref, root)
    state = run_state(run_dir)
    if state.status not in (STALE, "completed"):
        raise UserError(f"run {state.run_id} is {state.status}; only a stale run (status running, process gone) or "
                        f"a completed run missing from the registry can be finalized{_because(state)}")
    registry = registry or ModelRegistry()
    with held(run_dir, "finalized"):
        remove_temp_files(run_dir)
        if state.status == STALE:
            _complete_or_fail(run_dir)
        state = run_state(run_dir)
        if state.status == "completed":
            from src.pipelines.runner import register_completed

            register_completed(registry, run_dir)
    return state


def _because(state: RunState) -> str:
    return f" ({state.note})" if state.note else ""


def _find(ref: str, root: Optional[Path]) -> Path:
    from src.common.run_dir import output_root

    for path in (Path(ref).expanduser(), output_root(root) / ref):
        if path.is_dir():
            return path.resolve()
    raise UserError(f"unknown run {ref!r}: no such run directory, and no run id under {output_root(root)}")


def _complete_or_fail(run_dir: Path) -> None:
    from src.common.checkpoint import file_sha256, load_checkpoint

    meta = read_metadata(run_dir)
    epochs = sorted(run_dir.glob("checkpoint_epoch_*.pth"), key=epoch_of_checkpoint)
    last = load_checkpoint(epochs[-1]) if epochs else None
    if last is None or not last.get("final"):
        done = last["epoch"] if last else 0
        update_metadata(run_dir, status="failed", finished_at=now_iso(),
                        error=f"the training process (pid {meta.get('pid')} on {meta.get('hostname')}) died after "
                              f"epoch {done} without finishing; marked failed by `street-scene runs finalize`")
        return
    from src.tasks import load_task

    task = load_task(meta["task"])
    rows = [r for r in read_metrics_csv(run_dir / METRICS_FILE) if r["epoch"] <= last["epoch"]]
    best_epoch = _best_epoch(rows, task.BEST_METRIC)
    _restore_best(run_dir, best_epoch)
    from src.pipelines.runner import _finish_artifacts

    _finish_artifacts(run_dir)
    update_metadata(run_dir, status="completed", finished_at=now_iso(), finalized_at=now_iso(),
                    result={"checkpoint": BEST_CHECKPOINT, "checkpoint_sha256": file_sha256(run_dir / BEST_CHECKPOINT),
                            "metrics": task.result_metrics(rows, best_epoch)})


def _best_epoch(rows: List[Dict[str, Any]], metric: str) -> int:
    """The first epoch with the highest finite `metric`, the rule both tasks choose best_model.pth by."""
    best = None
    for row in rows:
        value = row.get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and (best is None or value > best[1]):
            best = (row["epoch"], value)
    if best is None:
        raise UserError(f"metrics.csv has no finite {metric}; the run cannot be completed")
    return best[0]


def _restore_best(run_dir: Path, best_epoch: int) -> None:
    """best_model.pth must hold the best epoch; a process killed between writing the epoch checkpoint and the best
    model left an older one (or none): rebuild it from checkpoint_epoch_<best>.pth."""
    from src.common.checkpoint import load_checkpoint, save_checkpoint
    from src.common.run_dir import epoch_checkpoint_name

    best = run_dir / BEST_CHECKPOINT
    if best.is_file() and load_checkpoint(best)["epoch"] == best_epoch:
        return
    source = run_dir / epoch_checkpoint_name(best_epoch)
    if not source.is_file():
        raise UserError(f"run {run_dir.name}: {BEST_CHECKPOINT} does not hold the best epoch {best_epoch} and "
                        f"{source.name} is gone (checkpoint.keep_last); it cannot be completed")
    ckpt = load_checkpoint(source)
    save_checkpoint(best, {k: v for k, v in ckpt.items() if k not in ("train_state", "final")})
