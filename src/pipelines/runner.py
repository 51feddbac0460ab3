"""The shared training lifecycle for every task.

validate everything -> create the run dir -> record config/metadata/environment -> seed -> task.train
-> mark completed -> register. A failure after the run dir exists marks it `failed` and registers nothing.
"""

import contextlib
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from src.common.atomic import atomic_write_bytes, atomic_write_text
from src.common.checkpoint import file_sha256
from src.common.config_manager import ConfigManager
from src.common.errors import UserError
from src.common.metadata import (METADATA_FILE, collect_metadata, environment_lines, now_iso, read_metadata,
                                 update_metadata, write_metadata)
from src.common.run_dir import validate_run_name
from src.pipelines.context import BEST_CHECKPOINT, METRICS_FILE, TrainContext, read_metrics_csv
from src.tasks import load_task


@dataclass
class TrainRequest:
    config_path: Path
    task: str
    subtask: Optional[str]
    train_data: Optional[str]
    val_data: Optional[str]
    data_yaml: Optional[str] = None
    run_name: Optional[str] = None
    overrides: Sequence[str] = ()
    seed: Optional[int] = None
    output_dir: Optional[Path] = None
    registry_path: Optional[Path] = None
    # Recorded in metadata.yaml as given (e.g. {"reproduces": run_id}); never part of the config hash.
    extra_metadata: Dict[str, Any] = field(default_factory=dict)
    resume: Optional[str] = None  # checkpoint_epoch_N.pth, run dir or run id to continue
    mlflow: Optional[bool] = None  # --mlflow: live MLflow logging (None: config tracking.mlflow.enabled)
    wandb: Optional[bool] = None  # --wandb: live W&B logging (None: config tracking.wandb.enabled)
    # Stop after this many epochs without changing the config (so schedules match the full run).
    stop_after_epoch: Optional[int] = None


@dataclass
class TrainResult:
    run_id: str
    run_dir: Path
    metrics: Dict[str, Any]
    checkpoint_path: Path


def resolve_device(requested: Any) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; anything else is checked, not guessed."""
    import torch

    name = str(requested if requested is not None else "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"config device {requested!r} asks for CUDA but no GPU is available; set device=cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"config device {requested!r} is not one of auto, cpu, cuda, cuda:N")
    return name


def resolve_subtask(task_module, config: Dict[str, Any], task: str, subtask: Optional[str]) -> str:
    known = task_module.subtasks(config)
    if subtask is None:
        if len(known) == 1:
            return known[0]
        raise UserError(f"--{task}-task is required; choose one of {', '.join(known)}")
    if subtask not in known:
        raise UserError(f"unknown --{task}-task {subtask!r}; choose one of {', '.join(known)} "
                        f"(defined under {task}.tasks in the config)")
    return subtask


def _checkpoint_policy(config: Dict[str, Any]) -> Dict[str, int]:
    policy = config.get("checkpoint") or {}
    save_every, keep_last = policy.get("save_every", 1), policy.get("keep_last", 0)
    for key, value in (("save_every", save_every), ("keep_last", keep_last)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"config checkpoint.{key} must be an integer >= 0, got {value!r}")
    return {"save_every": save_every, "keep_last": keep_last}


def train(request: TrainRequest, registry=None) -> TrainResult:
    """Run one training job end to end; see the module docstring. Under torchrun only rank 0 writes."""
    from src.common import distributed
    from src.common.model_registry import ModelRegistry

    if request.run_name is not None:
        validate_run_name(request.run_name)
    cm = ConfigManager(request.config_path, request.overrides, request.seed)
    config = cm.get_config()
    task_module = load_task(request.task)
    subtask = resolve_subtask(task_module, config, request.task, request.subtask)
    policy = _checkpoint_policy(config)
    resume = None
    if request.resume:
        from src.pipelines.resume import load_resume

        resume = load_resume(request.resume, cm, task_module, request.task, subtask)
    data = task_module.prepare_train(config, subtask, request.train_data, request.val_data, request.data_yaml)
    device = resolve_device(config.get("device", "auto"))  # imports torch: after the cheap checks
    if resume is not None:
        from src.pipelines.resume import check_run_name, check_same_data

        check_same_data(resume[1], data)
        check_run_name(resume[1], request.run_name)
    from src.tracking.live import live_settings

    trackers = live_settings(config, mlflow=request.mlflow, wandb=request.wandb)  # bad tracking config fails now
    tracking = any(t.enabled for t in trackers)
    dist = distributed.init_distributed(device)
    try:
        main = dist.rank == 0
        registry = (registry or ModelRegistry(request.registry_path)) if main else None
        if main:
            registry.list_entries()  # a corrupt registry fails now, before hours of training, not after
        return _run(request, cm, task_module, subtask, dist.device, policy, data, resume, registry, main,
                    tracking)
    finally:
        if dist.created_group:
            distributed.cleanup()


def _run(request, cm, task_module, subtask, device, policy, data, resume, registry, main, tracking) -> TrainResult:
    from src.common import distributed
    from src.common.seeding import default_num_threads, process_settings_restored

    run_id = run_dir = None
    if main:
        if resume is None:
            run_id, run_dir = cm.create_run_dir(request.run_name or subtask, request.output_dir)
        else:
            run_dir = resume[1]
            run_id = run_dir.name
    run_id, run_dir = distributed.broadcast_object((run_id, run_dir))
    with process_settings_restored(default_num_threads()):
        return _train_in_run_dir(request, cm, task_module, subtask, device, policy, data, resume, registry, main,
                                 tracking, run_id, run_dir)


def _train_in_run_dir(request, cm, task_module, subtask, device, policy, data, resume, registry, main, tracking,
                      run_id, run_dir) -> TrainResult:
    from src.common.model_registry import build_entry
    from src.common.run_log import tee_output
    from src.common.seeding import seed_everything

    live = ctx = None
    try:
        seed_everything(cm.seed)  # before recording metadata, so it lists the settings in force
        metadata = _open_run(run_dir, run_id, request, cm, subtask, device, data, resume) if main else {}
        ctx = TrainContext(config=cm.get_config(), config_hash=cm.get_config_hash(), task=request.task,
                           subtask=subtask, seed=cm.seed, device=device, run_id=run_id, run_dir=run_dir,
                           data=data, metadata=metadata, stop_after_epoch=request.stop_after_epoch,
                           resume=resume[0] if resume else None, is_main=main, **policy)
        if main and tracking:
            from src.tracking.live import start_live_tracking

            live = start_live_tracking(ctx.config, run_dir, run_id, mlflow=request.mlflow, wandb=request.wandb)
            ctx.epoch_hooks.extend(live.hooks)
        if resume is not None:
            from src.pipelines.resume import history_until

            ctx.history = history_until(run_dir, resume[0]["epoch"])
        with (tee_output(run_dir / "train.log") if main else contextlib.nullcontext()):
            metrics = task_module.train(ctx)
            ctx.finish_checkpoints()  # every checkpoint on disk before checks, hashes and the registry
            if main:
                _finish_artifacts(run_dir, ctx.curves_image)
    except BaseException as exc:
        if ctx is not None:  # a failed run keeps the checkpoints it had finished writing
            ctx.finish_checkpoints(raise_errors=False)
        if main:
            _mark_failed(run_dir, exc)
        if live is not None:
            live.finish()  # never raises; the failed run is still visible in the tracker
        raise
    best = run_dir / BEST_CHECKPOINT
    if main:
        update_metadata(run_dir, status="completed", finished_at=now_iso(), **ctx.metadata_updates,
                        result={"checkpoint": BEST_CHECKPOINT, "checkpoint_sha256": file_sha256(best),
                                "metrics": metrics})
        if live is not None:
            live.finish()
        registry.register(build_entry(run_dir))
        with tee_output(run_dir / "train.log"):
            print(f"Training completed. Results saved to {display_path(run_dir)}")
            print(f"Run ID: {run_id}")
    return TrainResult(run_id=run_id, run_dir=run_dir, metrics=metrics, checkpoint_path=best)


def _open_run(run_dir, run_id, request, cm, subtask, device, data, resume) -> Dict[str, Any]:
    if resume is None:
        return _start_run(run_dir, run_id, request, cm, subtask, device, data)
    from src.pipelines.resume import reopen_run

    return reopen_run(run_dir, resume[0], cm, " ".join(sys.argv))


def _start_run(run_dir: Path, run_id: str, request: TrainRequest, cm: ConfigManager, subtask: str,
               device: str, data: Dict[str, Any]) -> Dict[str, Any]:
    from src.common.seeding import determinism_settings

    cm.save_config(run_dir)
    env_meta, diff = collect_metadata(device=device, determinism=determinism_settings())
    metadata = {
        "run_id": run_id, "run_name": request.run_name or subtask, "status": "running",
        "task": request.task, "subtask": subtask, "config_hash": cm.get_config_hash(),
        "config_sha256": cm.get_config_sha256(), "config_source": str(Path(request.config_path).resolve()),
        "seed": cm.seed, "seed_source": cm.seed_source, "started_at": now_iso(), "finished_at": None,
        "data": data.get("record", {}), **env_meta,
    }
    metadata.update(data.get("metadata", {}))
    metadata.update(request.extra_metadata)
    if request.stop_after_epoch is not None:
        metadata["stop_after_epoch"] = request.stop_after_epoch
    write_metadata(run_dir, metadata)
    atomic_write_text(run_dir / "environment.txt", environment_lines())
    if diff is not None:
        atomic_write_text(run_dir / "git.diff", diff)
    return metadata


def _finish_artifacts(run_dir: Path, curves_image: Optional[Path] = None) -> None:
    from src.common.curves import CURVES_FILE, plot_curves

    if curves_image is not None and Path(curves_image).is_file():
        atomic_write_bytes(run_dir / CURVES_FILE, Path(curves_image).read_bytes())
    else:
        rows = read_metrics_csv(run_dir / METRICS_FILE)
        if rows:
            plot_curves(rows, run_dir / CURVES_FILE)
    if not (run_dir / BEST_CHECKPOINT).is_file():
        raise RuntimeError(f"the task finished without writing {BEST_CHECKPOINT}")


def _mark_failed(run_dir: Path, exc: BaseException) -> None:
    reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
    try:
        meta = read_metadata(run_dir) if (run_dir / METADATA_FILE).is_file() else {"run_id": run_dir.name}
        meta.update(status="failed", finished_at=now_iso(), error=reason.strip()[:2000])
        write_metadata(run_dir, meta)
        with open(run_dir / "train.log", "a", encoding="utf-8") as log:
            log.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    except (OSError, UserError):
        pass  # the original error matters more than failing to annotate the run dir


def display_path(path: Path) -> str:
    """Relative to the cwd when the run dir is under it (as the guide prints it), else absolute."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(Path(path).resolve())

