"""Resuming a run: find the checkpoint, refuse config changes that would alter results, reopen the run dir."""

from pathlib import Path
from typing import Any, Dict, List, Tuple

from src.common.checkpoint import load_checkpoint
from src.common.config_manager import ConfigManager
from src.common.dictdiff import format_changes
from src.common.errors import UserError
from src.common.metadata import now_iso, read_metadata, write_metadata
from src.common.run_dir import resolve_run
from src.pipelines.context import _epoch_of, read_metrics_csv, METRICS_FILE


def find_resume_checkpoint(ref: str) -> Path:
    """A checkpoint file, or a run id / run dir (then its newest checkpoint_epoch_N.pth)."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path.resolve()
    run_dir = resolve_run(ref)
    found = sorted(run_dir.glob("checkpoint_epoch_*.pth"), key=_epoch_of)
    if not found:
        raise UserError(f"run {run_dir.name} has no checkpoint_epoch_N.pth to resume from")
    return found[-1]


def load_resume(ref: str, cm: ConfigManager, task_module, task: str, subtask: str) -> Tuple[Dict[str, Any], Path]:
    """(checkpoint, run dir) to continue; refuses anything that would not continue the same run."""
    if not hasattr(task_module, "RESUME_SAFE_KEYS"):
        raise UserError(f"--resume is not supported for --task {task}; start a new run instead")
    ckpt_path = find_resume_checkpoint(ref)
    ckpt = load_checkpoint(ckpt_path)
    if "train_state" not in ckpt:
        raise UserError(f"{ckpt_path} holds no training state (best_model.pth is for evaluation); resume from "
                        "a checkpoint_epoch_N.pth")
    if (ckpt["task"], ckpt["subtask"]) != (task, subtask):
        raise UserError(f"{ckpt_path} is a {ckpt['task']}/{ckpt['subtask']} checkpoint, not {task}/{subtask}")
    run_dir = ckpt_path.parent
    if not (run_dir / "metadata.yaml").is_file():
        raise UserError(f"{ckpt_path} is not inside a run directory (no metadata.yaml beside it)")
    later = [p.name for p in run_dir.glob("checkpoint_epoch_*.pth") if _epoch_of(p) > ckpt["epoch"]]
    if later:
        raise UserError(f"run {run_dir.name} already has {', '.join(sorted(later))}; resuming from epoch "
                        f"{ckpt['epoch']} would overwrite them: resume from the newest checkpoint")
    unsafe = [c for c in cm.diff(ckpt["config"]) if c[0] not in task_module.RESUME_SAFE_KEYS]
    if unsafe:
        raise UserError(f"cannot resume {run_dir.name}: the config differs in "
                        f"{'; '.join(format_changes(unsafe))} (only {', '.join(task_module.RESUME_SAFE_KEYS)} "
                        f"may change); resume with --config {run_dir / 'config.yaml'}")
    return ckpt, run_dir


def reopen_run(run_dir: Path, ckpt: Dict[str, Any], cm: ConfigManager, command: str) -> Dict[str, Any]:
    """Mark the run running again and record the resume; returns the metadata."""
    meta = read_metadata(run_dir)
    changed = [c[0] for c in cm.diff(ckpt["config"])]
    resumes: List[Dict[str, Any]] = list(meta.get("resumes") or [])
    resumes.append({"at": now_iso(), "from_epoch": int(ckpt["epoch"]), "command": command,
                    "changed_keys": changed, "previous_status": meta.get("status")})
    meta.update(status="running", finished_at=None, resumes=resumes)
    meta.pop("error", None)
    write_metadata(run_dir, meta)
    return meta


def history_until(run_dir: Path, epoch: int) -> List[Dict[str, Any]]:
    return [row for row in read_metrics_csv(run_dir / METRICS_FILE) if int(row["epoch"]) <= epoch]
