"""Live tracking during training: each epoch's metrics go to MLflow / W&B as they are logged.

Wiring (runner): after the run dir's config.yaml and metadata.yaml exist,
    live = start_live_tracking(config, run_dir, run_id, mlflow=args_flag_or_None, wandb=...)
    ctx.epoch_hooks.extend(live.hooks)
    ... training ...
    live.finish()   # after metadata.yaml has its final status (completed or failed)

A tracking failure never fails training: it prints one warning, that tracker is switched off for the rest of
the run, and the run can be synced afterwards with `street-scene sync mlflow|wandb <run_id>`.
"""

import importlib.util
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from src.common.errors import UserError
from src.common.report import warn
from src.tracking.common import MlflowSettings, WandbSettings, load_run, short_error, tracking_settings

LIVE_TIMEOUT_S = 10.0  # per MLflow request during training: a dead server costs seconds once, not minutes
EpochHook = Callable[[int, Dict[str, Any]], None]


def live_settings(config: Dict[str, Any], *, mlflow: Optional[bool] = None,
                  wandb: Optional[bool] = None) -> Tuple[MlflowSettings, WandbSettings]:
    """The config's `tracking` section with the --mlflow / --wandb flags applied (None: keep the config's), checked
    before any work: unknown keys, a missing extra, W&B online without credentials are UserErrors."""
    from dataclasses import replace

    ml, wb = tracking_settings(config)
    ml = replace(ml, enabled=ml.enabled if mlflow is None else mlflow)
    wb = replace(wb, enabled=wb.enabled if wandb is None else wandb)
    for enabled, module, extra in ((ml.enabled, "mlflow", "mlflow"), (wb.enabled, "wandb", "wandb")):
        if enabled and importlib.util.find_spec(module) is None:
            raise UserError(f"tracking.{module}.enabled is set but {module} is not installed; "
                            f"pip install -e '.[{extra}]' or turn it off")
    if wb.enabled:
        from src.tracking.wandb_sync import check_mode

        check_mode(wb.mode)
    return ml, wb


class _MlflowLive:
    name, command = "MLflow", "mlflow"

    def __init__(self, settings: MlflowSettings, run_dir: Path):
        from src.tracking.mlflow_sync import MlflowTarget, bounded_requests

        self._bounded = bounded_requests
        self.target = MlflowTarget(settings.tracking_uri, settings.experiment, timeout=LIVE_TIMEOUT_S)
        with bounded_requests(LIVE_TIMEOUT_S):
            run, _ = self.target.start_run(load_run(str(run_dir)))
        self.mlflow_run_id = run.info.run_id

    def log(self, epoch: int, row: Dict[str, Any]) -> None:
        with self._bounded(LIVE_TIMEOUT_S):
            self.target.log_epoch(self.mlflow_run_id, epoch, row)

    def finish(self, run_dir: Path) -> None:
        with self._bounded(LIVE_TIMEOUT_S):
            self.target.sync(load_run(str(run_dir)))  # final metrics, files, status: the same as a later sync


class _WandbLive:
    name, command = "W&B", "wandb"

    def __init__(self, settings: WandbSettings, run_dir: Path):
        from src.tracking.wandb_sync import open_run

        self.run = open_run(load_run(str(run_dir)), project=settings.project, mode=settings.mode,
                            entity=settings.entity)

    def log(self, epoch: int, row: Dict[str, Any]) -> None:
        if epoch > self.run.step:  # W&B drops a step it already has (with a warning)
            self.run.log(dict(row), step=epoch)

    def finish(self, run_dir: Path) -> None:
        from src.tracking.wandb_sync import close_run, log_history

        record = load_run(str(run_dir))
        log_history(self.run, record)
        close_run(self.run, record)


class LiveTracking:
    """The trackers a training run logs to; `hooks` go into TrainContext.epoch_hooks."""

    def __init__(self, run_dir: Path, run_id: str, backends: List[Any]):
        self.run_dir, self.run_id = Path(run_dir), run_id
        self.backends = backends

    @property
    def hooks(self) -> List[EpochHook]:
        return [self._hook_for(b) for b in self.backends]

    def _hook_for(self, backend) -> EpochHook:
        def hook(epoch: int, row: Dict[str, Any]) -> None:
            if backend in self.backends:
                self._guard(backend, f"epoch {epoch}", backend.log, epoch, row)
        return hook

    def finish(self) -> None:
        """Sync the whole run dir (final metrics, files, status) into every tracker still working; never raises."""
        for backend in list(self.backends):
            self._guard(backend, "the end of the run", backend.finish, self.run_dir)
        self.backends = []

    def _guard(self, backend, when: str, call, *args) -> None:
        try:
            call(*args)
        # Any failure of a tracker (its server, its package, our sync) must not cost the training run.
        except Exception as exc:  # noqa: BLE001
            self.backends = [b for b in self.backends if b is not backend]
            _warn(backend.name, backend.command, self.run_id, when, exc)


def start_live_tracking(config: Dict[str, Any], run_dir: Path, run_id: str, *, mlflow: Optional[bool] = None,
                        wandb: Optional[bool] = None) -> LiveTracking:
    """Open the trackers the config (or the flags) enable for this run. A tracker that cannot start is skipped
    with a warning; call `live_settings` before the run dir exists to turn bad settings into errors instead."""
    backends: List[Any] = []
    try:
        ml, wb = live_settings(config, mlflow=mlflow, wandb=wandb)
    except UserError as exc:
        _warn("tracking", "mlflow|wandb", run_id, "the start", exc)
        return LiveTracking(run_dir, run_id, backends)
    for enabled, cls, settings in ((ml.enabled, _MlflowLive, ml), (wb.enabled, _WandbLive, wb)):
        if not enabled:
            continue
        try:
            backends.append(cls(settings, Path(run_dir)))
        except Exception as exc:  # noqa: BLE001  (same reason as LiveTracking._guard)
            _warn(cls.name, cls.command, run_id, "the start", exc)
    return LiveTracking(run_dir, run_id, backends)


def _warn(name: str, command: str, run_id: str, when: str, exc: BaseException) -> None:
    warn(f"warning: {name} tracking failed at {when} ({short_error(exc)}); training goes on without it. "
         f"Sync the run afterwards: street-scene sync {command} {run_id}")
