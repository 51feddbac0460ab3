"""The shared training lifecycle for every task.

validate everything -> create the run dir -> record config/metadata/environment -> seed -> task.train
-> mark completed -> register. A failure after the run dir exists marks it `failed` and registers nothing.
"""

import contextlib
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from src.common.atomic import atomic_write_text
from src.common.checkpoint import file_sha256
from src.common.errors import RunFailedError, RunInterrupted, UserError
from src.common.metadata import (collect_metadata, environment_lines, now_iso, read_metadata, update_metadata,
                                 write_metadata)
from src.common.model_registry import REGISTRY_ENV
from src.common.report import note
from src.common.run_dir import (BEST_CHECKPOINT, CURVES_FILE, ENVIRONMENT_FILE, GIT_DIFF_FILE, LOG_FILE, METADATA_FILE,
                                METRICS_FILE, OUTPUT_DIR_ENV, output_root, read_metrics_csv, validate_run_name)
from src.common.writable import check_writable
from src.pipelines.context import TrainContext
from src.pipelines.job import Job, open_job, resolve_device
from src.pipelines.resume import ResumePoint
from src.tasks.contract import PreparedData


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


@dataclass
class RunPlan:
    """Everything resolved and checked before the run directory exists."""

    request: TrainRequest
    job: Job
    device: str
    data: PreparedData
    resume: Optional[ResumePoint]  # when continuing a run
    tracking: bool
    registry: Any = None  # ModelRegistry on the writing process, None elsewhere
    main: bool = True


def train(request: TrainRequest, registry=None) -> TrainResult:
    """Run one training job end to end; see the module docstring. Under torchrun only rank 0 writes."""
    from src.common import distributed

    plan = _plan(request)
    dist = distributed.init_distributed(plan.device)
    try:
        plan.main = dist.rank == 0
        plan.device = dist.device
        if plan.main:
            plan.registry = _writable_registry(registry, request)
            check_writable(output_root(request.output_dir), "the output directory",  # before training, not after
                           f"set {OUTPUT_DIR_ENV} to a writable folder", is_dir=True)
        return _run(plan)
    finally:
        if dist.created_group:
            distributed.cleanup()


def _plan(request: TrainRequest) -> RunPlan:
    """Validate config, subtask, device, data, weights and resume target; nothing is written."""
    if request.run_name is not None:
        validate_run_name(request.run_name)
    job = open_job(request.config_path, request.task, request.subtask, request.overrides, request.seed)
    resume = None
    if request.resume:
        from src.pipelines.resume import load_resume

        resume = load_resume(request.resume, job.cm, job.task_module, request.task, job.subtask)
    device = resolve_device(job.config["device"])  # imports torch: after the cheap checks
    data = job.task_module.prepare_train(job.config, job.subtask, request.train_data, request.val_data,
                                         request.data_yaml, device)
    if resume is not None:
        from src.pipelines.resume import check_run_name, check_same_data

        check_same_data(resume.run_dir, data)
        check_run_name(resume.run_dir, request.run_name)
    from src.tracking.live import live_settings

    trackers = live_settings(job.config, mlflow=request.mlflow, wandb=request.wandb)  # bad tracking config fails now
    return RunPlan(request=request, job=job, device=device, data=data, resume=resume,
                   tracking=any(t.enabled for t in trackers))


def _writable_registry(registry, request: TrainRequest):
    from src.common.model_registry import ModelRegistry

    registry = registry or ModelRegistry(request.registry_path)
    registry.list_entries()  # a corrupt registry fails now, before hours of training, not after
    check_writable(registry.path, "the model registry", f"set {REGISTRY_ENV} to a writable file")
    return registry


def _run(plan: RunPlan) -> TrainResult:
    """Create (or reopen) the run dir and hold its lock while training: a second `--resume` of a live run is
    refused, and a run whose process died is recognisable as stale (see src.common.run_liveness)."""
    from src.common import distributed
    from src.common.run_liveness import RunLock, signals_as_interrupts
    from src.common.seeding import default_num_threads, process_settings_restored

    run_id = run_dir = lock = None
    with signals_as_interrupts():
        try:
            if plan.main:
                if plan.resume is None:
                    run_id, run_dir = plan.job.cm.create_run_dir(plan.request.run_name or plan.job.subtask,
                                                                 plan.request.output_dir)
                    lock = RunLock(run_dir).acquire("trained")
                else:
                    run_dir = plan.resume.run_dir
                    run_id = run_dir.name
                    lock = RunLock(run_dir).acquire("resumed")  # before anything in it changes
            run_id, run_dir = distributed.broadcast_object((run_id, run_dir))
            with process_settings_restored(default_num_threads()):
                return _train_in_run_dir(plan, run_id, run_dir)
        finally:
            if lock is not None:
                lock.release()


def _train_in_run_dir(plan: RunPlan, run_id: str, run_dir: Path) -> TrainResult:
    from src.common.run_log import tee_output
    from src.common.seeding import seed_everything

    request, cm, main = plan.request, plan.job.cm, plan.main
    live = ctx = None
    try:
        seed_everything(cm.seed)  # before recording metadata, so it lists the settings in force
        metadata = _open_run(run_dir, run_id, plan) if main else {}
        ctx = TrainContext(config=cm.get_config(), config_hash=cm.get_config_hash(), task=request.task,
                           subtask=plan.job.subtask, seed=cm.seed, device=plan.device, run_id=run_id,
                           run_dir=run_dir, data=plan.data, metadata=metadata,
                           stop_after_epoch=request.stop_after_epoch,
                           resume=plan.resume.checkpoint if plan.resume else None, is_main=main,
                           **plan.job.config["checkpoint"])
        if main and plan.tracking:
            from src.tracking.live import start_live_tracking

            live = start_live_tracking(ctx.config, run_dir, run_id, mlflow=request.mlflow, wandb=request.wandb)
            ctx.epoch_hooks.extend(live.hooks)
        if plan.resume is not None:
            from src.pipelines.resume import history_until

            ctx.history = history_until(run_dir, plan.resume.checkpoint["epoch"])
        with (tee_output(run_dir / LOG_FILE) if main else contextlib.nullcontext()):
            outcome = plan.job.task_module.train(ctx)
            ctx.finish_checkpoints()  # every checkpoint on disk before checks, hashes and the registry
            if main:
                _finish_artifacts(run_dir)
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
        update_metadata(run_dir, status="completed", finished_at=now_iso(), **outcome.metadata,
                        result={"checkpoint": BEST_CHECKPOINT, "checkpoint_sha256": file_sha256(best),
                                "metrics": outcome.metrics})
        if live is not None:
            live.finish()
        register_completed(plan.registry, run_dir)
        with tee_output(run_dir / LOG_FILE):
            note(f"Training completed. Results saved to {display_path(run_dir)}")
            note(f"Run ID: {run_id}")
    return TrainResult(run_id=run_id, run_dir=run_dir, metrics=outcome.metrics, checkpoint_path=best)


def register_completed(registry, run_dir: Path) -> None:
    """Register a completed run; a failure (disk full, registry replaced by something unwritable) is one line
    that says the run itself is fine and how to register it later."""
    from src.common.model_registry import build_entry

    try:
        registry.register(build_entry(run_dir))
    except (OSError, ValueError, UserError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise RunFailedError(f"run {run_dir.name} completed but could not be registered ({reason}); fix that, then "
                             "run `street-scene registry rebuild` to add it") from exc


def _open_run(run_dir: Path, run_id: str, plan: RunPlan) -> Dict[str, Any]:
    if plan.resume is None:
        return _start_run(run_dir, run_id, plan)
    from src.pipelines.resume import reopen_run

    return reopen_run(run_dir, plan.resume.checkpoint, plan.job.cm, " ".join(sys.argv))


def _start_run(run_dir: Path, run_id: str, plan: RunPlan) -> Dict[str, Any]:
    from src.common.seeding import determinism_settings

    request, cm, subtask, data = plan.request, plan.job.cm, plan.job.subtask, plan.data
    cm.save_config(run_dir)
    env_meta, diff = collect_metadata(device=plan.device, determinism=determinism_settings())
    metadata = {
        "run_id": run_id, "run_name": request.run_name or subtask, "status": "running", "pid": os.getpid(),
        "heartbeat_at": now_iso(),
        "task": request.task, "subtask": subtask, "config_hash": cm.get_config_hash(),
        "config_sha256": cm.get_config_sha256(), "config_source": str(Path(request.config_path).resolve()),
        "seed": cm.seed, "seed_source": cm.seed_source, "started_at": now_iso(), "finished_at": None,
        "data": data.record, **env_meta,
    }
    if data.fingerprints is not None:
        metadata["dataset_fingerprints"] = data.fingerprints
    metadata.update(request.extra_metadata)
    if request.stop_after_epoch is not None:
        metadata["stop_after_epoch"] = request.stop_after_epoch
    write_metadata(run_dir, metadata)
    atomic_write_text(run_dir / ENVIRONMENT_FILE, environment_lines())
    if diff is not None:
        atomic_write_text(run_dir / GIT_DIFF_FILE, diff)
    return metadata


def _finish_artifacts(run_dir: Path) -> None:
    from src.common.curves import plot_curves

    # Always drawn from metrics.csv: the curves carry the same metric names as every other output.
    rows = read_metrics_csv(run_dir / METRICS_FILE)
    if rows:
        plot_curves(rows, run_dir / CURVES_FILE)
    if not (run_dir / BEST_CHECKPOINT).is_file():
        raise RuntimeError(f"the task finished without writing {BEST_CHECKPOINT}")


def _mark_failed(run_dir: Path, exc: BaseException) -> None:
    reason = failure_reason(exc)
    try:
        meta = read_metadata(run_dir) if (run_dir / METADATA_FILE).is_file() else {"run_id": run_dir.name}
        meta.update(status="failed", finished_at=now_iso(), error=reason.strip()[:2000])
        write_metadata(run_dir, meta)
        with open(run_dir / LOG_FILE, "a", encoding="utf-8") as log:
            log.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    except (OSError, UserError):
        pass  # the original error matters more than failing to annotate the run dir


def failure_reason(exc: BaseException) -> str:
    """What metadata.yaml says a failed run died of: our one-line messages as they are, else the exception."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by SIGINT"
    if isinstance(exc, (UserError, RunInterrupted)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def display_path(path: Path) -> str:
    """Relative to the cwd when the run dir is under it (as the README shows it), else absolute."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(Path(path).resolve())
