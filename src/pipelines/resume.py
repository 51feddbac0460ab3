"""Resuming a run: find the checkpoint, refuse config changes that would alter results, reopen the run dir."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from src.common.checkpoint import load_checkpoint, save_checkpoint
from src.common.config_manager import ConfigManager
from src.common.dictdiff import format_changes
from src.common.errors import UserError
from src.common.metadata import now_iso, read_metadata, write_metadata
from src.common.report import note
from src.common.run_dir import (BEST_CHECKPOINT, METADATA_FILE, METRICS_FILE, epoch_checkpoint_name,
                                epoch_of_checkpoint, read_metrics_csv, resolve_run)
from src.tasks.contract import PreparedData


def find_resume_checkpoint(ref: str) -> Path:
    """A checkpoint file, or a run id / run dir (then its newest checkpoint_epoch_N.pth)."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path.resolve()
    run_dir = resolve_run(ref)
    found = sorted(run_dir.glob("checkpoint_epoch_*.pth"), key=epoch_of_checkpoint)
    if not found:
        raise UserError(f"run {run_dir.name} has no checkpoint_epoch_N.pth to resume from")
    return found[-1]


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run continues: the epoch checkpoint it starts from and the run directory it reopens."""

    checkpoint: Dict[str, Any]
    run_dir: Path


def load_resume(ref: str, cm: ConfigManager, task_module, task: str, subtask: str) -> ResumePoint:
    """The point to continue from; refuses anything that would not continue the same run."""
    if not task_module.SUPPORTS_RESUME:
        raise UserError(f"--resume is not supported for --task {task}; start a new run instead")
    ckpt_path = find_resume_checkpoint(ref)
    ckpt = load_checkpoint(ckpt_path)
    if "train_state" not in ckpt:
        raise UserError(f"{ckpt_path} holds no training state (best_model.pth is for evaluation); resume from "
                        "a checkpoint_epoch_N.pth")
    if (ckpt["task"], ckpt["subtask"]) != (task, subtask):
        raise UserError(f"{ckpt_path} is a {ckpt['task']}/{ckpt['subtask']} checkpoint, not {task}/{subtask}")
    run_dir = ckpt_path.parent
    if not (run_dir / METADATA_FILE).is_file():
        raise UserError(f"{ckpt_path} is not inside a run directory (no metadata.yaml beside it)")
    from src.common.run_liveness import lock_is_free

    if not lock_is_free(run_dir):  # checked again, atomically, when the lock is taken
        raise UserError(f"run {run_dir.name} is still being trained by another process (pid "
                        f"{read_metadata(run_dir).get('pid')}); wait for it to finish or stop it before --resume")
    later = [p.name for p in run_dir.glob("checkpoint_epoch_*.pth") if epoch_of_checkpoint(p) > ckpt["epoch"]]
    if later:
        raise UserError(f"run {run_dir.name} already has {', '.join(sorted(later))}; resuming from epoch "
                        f"{ckpt['epoch']} would overwrite them: resume from the newest checkpoint")
    unsafe = [c for c in cm.diff(ckpt["config"]) if c[0] not in task_module.RESUME_SAFE_KEYS]
    if unsafe:
        raise UserError(f"cannot resume {run_dir.name}: the config differs in "
                        f"{'; '.join(format_changes(unsafe))} (only {', '.join(task_module.RESUME_SAFE_KEYS)} "
                        f"may change); resume with --config {run_dir / 'config.yaml'}")
    total = task_module.total_epochs(cm.get_config())
    if ckpt["epoch"] >= total:
        raise UserError(f"run {run_dir.name} already trained all {total} epochs ({ckpt_path.name}); nothing to "
                        f"resume: if it died before registering, run `street-scene runs finalize {run_dir.name}`; "
                        "to train longer, start a new run")
    best_to_restore(run_dir, ckpt)  # refuses, before anything is written, a best model that cannot be rebuilt
    return ResumePoint(ckpt, run_dir)


def best_to_restore(run_dir: Path, ckpt: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The checkpoint best_model.pth must hold before training continues, or None when it already does.

    A run stopped between writing checkpoint_epoch_N.pth and best_model.pth (both at the end of a best epoch)
    has an older or no best_model.pth; if later epochs do not improve, the resumed run would end without the
    best model the uninterrupted run has. Its epoch checkpoint holds the same weights, so it is rebuilt from it.
    """
    best_epoch = (ckpt.get("train_state") or {}).get("best_epoch")
    best_path = run_dir / BEST_CHECKPOINT
    if not best_epoch:
        return None
    if best_path.is_file() and load_checkpoint(best_path).get("epoch") == best_epoch:
        return None
    if best_epoch == ckpt["epoch"]:
        source = ckpt
    elif (run_dir / epoch_checkpoint_name(best_epoch)).is_file():
        source = load_checkpoint(run_dir / epoch_checkpoint_name(best_epoch))
    elif best_path.is_file():
        return None  # holds another epoch and nothing to rebuild it from: keep what is there
    else:
        raise UserError(f"cannot resume {run_dir.name}: {BEST_CHECKPOINT} (epoch {best_epoch}) is missing and so "
                        f"is {epoch_checkpoint_name(best_epoch)}; the resumed run could not report its best model")
    return {k: v for k, v in source.items() if k != "train_state"}


def check_same_data(run_dir: Path, data: PreparedData) -> None:
    """Refuse to continue a run on data other than what its first epochs saw."""
    from src.common.fingerprint import compare_split_fingerprints

    recorded = read_metadata(run_dir).get("dataset_fingerprints")
    current = data.fingerprints
    if recorded and current:
        changes = compare_split_fingerprints(recorded, current)
        if changes:
            raise UserError(f"cannot resume {run_dir.name}: its data changed ({'; '.join(changes[:3])}); resume "
                            "with the same --train-data / --val-data, or start a new run")


def check_run_name(run_dir: Path, run_name) -> None:
    """Re-running the original command plus --resume is fine; naming another run is a mistake."""
    recorded = read_metadata(run_dir).get("run_name")
    if run_name is not None and run_name != recorded:
        raise UserError(f"--run-name {run_name} does not match the resumed run {run_dir.name} (named {recorded}); "
                        "a resumed run keeps its name: drop --run-name")


def reopen_run(run_dir: Path, ckpt: Dict[str, Any], cm: ConfigManager, command: str) -> Dict[str, Any]:
    """Mark the run running again and record the resume; returns the metadata. The caller holds the run's lock."""
    from src.common.run_liveness import remove_temp_files

    remove_temp_files(run_dir)  # half-written files of the process that died
    best = best_to_restore(run_dir, ckpt)
    if best is not None:
        save_checkpoint(run_dir / BEST_CHECKPOINT, best)
        note(f"Restored {BEST_CHECKPOINT} (epoch {best['epoch']}), which the interrupted run had not written")
    meta = read_metadata(run_dir)
    changed = [c[0] for c in cm.diff(ckpt["config"])]
    resumes: List[Dict[str, Any]] = list(meta.get("resumes") or [])
    resumes.append({"at": now_iso(), "from_epoch": int(ckpt["epoch"]), "command": command,
                    "changed_keys": changed, "previous_status": meta.get("status")})
    meta.update(status="running", finished_at=None, resumes=resumes, pid=os.getpid(), heartbeat_at=now_iso())
    meta.pop("error", None)
    write_metadata(run_dir, meta)
    return meta


def history_until(run_dir: Path, epoch: int) -> List[Dict[str, Any]]:
    return [row for row in read_metrics_csv(run_dir / METRICS_FILE) if int(row["epoch"]) <= epoch]
