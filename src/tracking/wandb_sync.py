"""Sync run directories into Weights & Biases, offline first.

The W&B run id is derived from our run id, and runs are opened with resume="allow", so syncing a run again
(online) continues the same W&B run; offline, each sync writes a new folder under WANDB_DIR with the same run
id, which `wandb sync` uploads into that one W&B run. History is logged with step = epoch, so points W&B already
has are skipped. wandb is imported here only, inside functions (`pip install -e .[wandb]`).
"""

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Optional

from src.common.errors import UserError
from src.common.image_files import PILLOW_IMAGE_SUFFIXES, is_image
from src.tracking.common import TAG_PREFIX, WANDB_MODES, RunRecord, TrackerUnavailable, short_error

_RESERVED = re.compile(r"[:;,#?/'\s]")  # characters W&B refuses in run ids
_ARTIFACT_BAD = re.compile(r"[^A-Za-z0-9_.-]")
_MAX_ID = 64
INIT_TIMEOUT_S = 30.0  # online: a W&B server that does not answer fails the sync instead of hanging 90 s


@dataclass
class WandbSyncResult:
    run_id: str  # ours
    wandb_run_id: str
    project: str
    mode: str
    location: str  # offline: the folder to upload with `wandb sync`; online: the run's URL


def import_wandb():
    """wandb, or a UserError saying how to install it. Its crash reporting stays off unless the user opted in."""
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")  # offline-first: a sync never phones home
    try:
        import wandb
    except ImportError:
        raise UserError("Weights & Biases is not installed; install the extra: pip install -e '.[wandb]'") from None
    return wandb


def wandb_run_id(run_id: str) -> str:
    """Our run id when W&B accepts it as is, else a safe form plus a hash of the original (deterministic)."""
    if not _RESERVED.search(run_id) and 0 < len(run_id) <= _MAX_ID:
        return run_id
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return f"{_RESERVED.sub('-', run_id)[: _MAX_ID - 9]}-{digest}"


def artifact_name(kind: str, run_id: str) -> str:
    return f"{kind}-{_ARTIFACT_BAD.sub('-', run_id)}"


def check_mode(mode: str) -> None:
    """Online needs credentials that exist locally (WANDB_API_KEY, `wandb login`, .netrc); checked without
    any network access, so a missing login fails at once with the fix."""
    if mode not in WANDB_MODES:
        raise UserError(f"W&B mode {mode!r} is not one of {', '.join(WANDB_MODES)}")
    if mode == "online" and not import_wandb().login(verify=False, prompt=False):
        raise TrackerUnavailable("W&B online mode needs credentials: run `wandb login` or set WANDB_API_KEY "
                                 "(or sync with --mode offline and upload later with `wandb sync`)")


def open_run(record: RunRecord, *, project: str, mode: str, entity: Optional[str] = None):
    """Start or resume the W&B run of `record`, with the config as dotted params and our tags."""
    wandb = import_wandb()
    check_mode(mode)
    settings = wandb.Settings(
        console="off",  # the run's own train.log has the output; W&B capturing it too would tee twice
        disable_git=True, save_code=False,  # the run dir records git state of the *training*, not of this sync
        x_disable_stats=True, x_disable_meta=True, x_save_requirements=False, disable_job_creation=True,
        init_timeout=INIT_TIMEOUT_S)
    meta = record.metadata
    tags = [t for t in (meta.get("task"), meta.get("subtask")) if t] + (["git-dirty"] if meta.get("git_dirty") else [])
    try:
        run = wandb.init(project=project, entity=entity, id=wandb_run_id(record.run_id), name=record.run_id,
                         resume="allow", mode=mode, job_type="train", tags=tags, reinit="create_new",
                         notes=f"street-scene run {record.run_id} ({record.run_dir})", settings=settings)
        config: Dict[str, Any] = {key: _json_value(text) for key, text in record.params.items()}
        config.update(record.tags)
        run.config.update(config, allow_val_change=True)
    except (wandb.Error, OSError, TimeoutError) as exc:
        raise UserError(f"W&B could not start run {record.run_id} ({mode}): {short_error(exc)}") from None
    return run


def log_history(run, record: RunRecord) -> int:
    """metrics.csv rows at step = epoch (1-based), skipping the steps the W&B run already has (`run.step` is the
    last one logged, 0 for a new run)."""
    logged = 0
    for row in record.history:
        if row["epoch"] > run.step:
            run.log(dict(row), step=row["epoch"])
            logged += 1
    return logged


def close_run(run, record: RunRecord, *, log_checkpoint: bool = False) -> str:
    """Final metrics and status into the summary, the run's files as artifacts, then finish. Returns where
    the run is (offline folder or URL)."""
    wandb = import_wandb()
    try:
        run.summary.update({**record.final_metrics, TAG_PREFIX + "status": record.status})
        files = wandb.Artifact(artifact_name("run-files", record.run_id), type="run-files",
                               metadata={"run_id": record.run_id})
        for path in record.artifacts:
            files.add_file(str(path), name=path.name)
        for path, folder in record.extra_files:  # ultralytics' args.yaml, results.csv, plots; evaluations
            files.add_file(str(path), name=f"{folder}/{path.name}")
        run.log_artifact(files)
        log_images(wandb, run, record)
        if log_checkpoint:
            _log_checkpoint(wandb, run, record)
        location = run.settings.sync_dir if run.settings.mode == "offline" else run.url
        run.finish(exit_code=1 if record.status == "failed" else 0)
    except (wandb.Error, OSError) as exc:
        raise UserError(f"W&B sync of {record.run_id} failed: {short_error(exc)}") from None
    return str(location)


def log_images(wandb, run, record: RunRecord) -> int:
    """ultralytics' and evaluations' plots and prediction images as W&B images (`ultralytics/confusion_matrix`,
    ...), at the last epoch's step: a later epoch synced into the same run still gets its own step."""
    images = {f"{folder}/{path.stem}": wandb.Image(str(path)) for path, folder in record.extra_files
              if is_image(path, PILLOW_IMAGE_SUFFIXES)}
    if images:
        last_epoch = max((row["epoch"] for row in record.history), default=0)
        run.log(images, step=max(last_epoch, run.step))
    return len(images)


def require_checkpoint(record: RunRecord) -> str:
    """The checkpoint's sha256; a missing or changed checkpoint is a UserError (checked before a run is opened)."""
    if record.checkpoint is None:
        raise UserError(f"{record.run_dir} has no checkpoint yet; sync without --log-checkpoint")
    return record.checkpoint_sha256()


def _log_checkpoint(wandb, run, record: RunRecord) -> None:
    keys = ("run_id", "config_hash", "task", "subtask")
    meta = {k: record.tags[TAG_PREFIX + k] for k in keys if TAG_PREFIX + k in record.tags}
    meta["checkpoint_sha256"] = require_checkpoint(record)
    model = wandb.Artifact(artifact_name("model", record.run_id), type="model", metadata=meta)
    model.add_file(str(record.checkpoint), name=record.checkpoint.name)
    run.log_artifact(model, aliases=["best"])


def sync_wandb(run: str, *, project: Optional[str] = None, mode: Optional[str] = None,
               entity: Optional[str] = None, log_checkpoint: bool = False) -> WandbSyncResult:
    """Sync one run (id or directory). Project / mode / entity default to the run's config `tracking.wandb`,
    then WANDB_PROJECT / WANDB_MODE / WANDB_ENTITY, then "street-scene" / offline."""
    from src.tracking.common import load_run, tracking_settings

    record = load_run(run)
    _, settings = tracking_settings(record.config)
    project, mode = project or settings.project, mode or settings.mode
    if log_checkpoint:
        require_checkpoint(record)
    wb_run = open_run(record, project=project, mode=mode, entity=entity or settings.entity)
    try:
        log_history(wb_run, record)
    except Exception:
        wb_run.finish(exit_code=1)  # never leave a half-open run behind; the error itself is re-raised
        raise
    location = close_run(wb_run, record, log_checkpoint=log_checkpoint)
    return WandbSyncResult(run_id=record.run_id, wandb_run_id=wb_run.id, project=project, mode=mode,
                           location=location)


def _json_value(text: str) -> Any:
    import json

    return json.loads(text)
