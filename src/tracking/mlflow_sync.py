"""Sync run directories into MLflow: one MLflow run per street-scene run, found again by its run-id tag.

Syncing is idempotent: a second sync finds the MLflow run tagged `street_scene.run_id=<id>` in the experiment
and adds only what is new (metric points, final metrics, status, artifacts). A run still training can be synced
again later. mlflow is imported here only, inside functions (`pip install -e .[mlflow]`).
"""

import contextlib
import math
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from src.common.errors import UserError
from src.tracking.common import (DEFAULT_PROJECT, TAG_PREFIX, RunRecord, TrackerUnavailable, history_names, is_number,
                                 short_error)

RUN_ID_TAG = TAG_PREFIX + "run_id"
LOGGED_CHECKPOINT_TAG = TAG_PREFIX + "logged_checkpoint_sha256"  # what is in the run's checkpoint/ artifacts
CHECKPOINT_ARTIFACT_DIR = "checkpoint"
_STATUS = {"completed": "FINISHED", "failed": "FAILED"}  # running/unknown: the MLflow run stays RUNNING
_BAD_NAME_CHARS = re.compile(r"[^/\w.\- ]")
_BATCH = 100  # MLflow accepts at most 100 params/tags and 1000 metrics per log_batch
ARTIFACTS_ENV = "STREET_SCENE_MLFLOW_ARTIFACTS"  # artifact root for the experiments a sync creates
SQLITE_ARTIFACTS_DIR = "mlartifacts"  # the default: beside the sqlite database, whatever the current folder
_SAFE_DIR_CHARS = re.compile(r"[^\w.-]")


@dataclass
class MlflowSyncResult:
    run_id: str  # ours
    mlflow_run_id: str
    experiment_id: str
    tracking_uri: str
    created: bool  # False: an existing MLflow run was updated
    model_version: Optional[str] = None  # with register_model


def import_mlflow():
    """mlflow, or a UserError saying how to install it. Its usage telemetry stays off unless the user opted in."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline-first: a sync never phones home
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per run, not tqdm bars
    try:
        import mlflow
    except ImportError:
        raise UserError("MLflow is not installed; install the extra: pip install -e '.[mlflow]'") from None
    return mlflow


@contextlib.contextmanager
def bounded_requests(timeout: float) -> Iterator[None]:
    """No retries and a short timeout for MLflow HTTP calls, so an unreachable server fails fast instead of
    retrying for minutes (the user's own MLFLOW_HTTP_REQUEST_* settings win)."""
    wanted = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, round(timeout)))}
    added = [key for key in wanted if key not in os.environ]
    os.environ.update({key: wanted[key] for key in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def metric_key(name: str) -> str:
    """A metric name MLflow accepts: characters outside [/\\w.- ] become '_'."""
    key = _BAD_NAME_CHARS.sub("_", str(name))
    return key if posixpath.normpath(key) == key and not key.startswith("/") else key.replace("/", "_")


class MlflowTarget:
    """One MLflow tracking store and experiment, checked on creation; syncs any number of runs into it."""

    def __init__(self, tracking_uri: Optional[str] = None, experiment: Optional[str] = None,
                 timeout: float = 5.0, artifact_location: Optional[str] = None):
        import_mlflow()
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.experiment_name = experiment or DEFAULT_PROJECT
        self.timeout = timeout
        # Explicit (option or env): a new experiment stores its artifacts there, an existing one must already.
        self.artifact_root = artifact_location or os.environ.get(ARTIFACTS_ENV) or None
        try:
            self.client = MlflowClient(tracking_uri=tracking_uri)
            self.tracking_uri = self.client.tracking_uri
            with bounded_requests(timeout):
                self.experiment_id = self._experiment_id()
        except (MlflowException, OSError) as exc:
            where = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "the default tracking URI"
            raise TrackerUnavailable(f"cannot use MLflow at {where}: {short_error(exc)}; start the server or pass "
                                     "a reachable --tracking-uri (e.g. sqlite:///mlflow.db or http://127.0.0.1:5000)"
                                     ) from None

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is None:
            location = experiment_artifact_location(self.artifact_root, self.tracking_uri, self.experiment_name)
            try:
                return self.client.create_experiment(self.experiment_name, artifact_location=location)
            except MlflowException as exc:  # another sync created it in the meantime
                exp = self.client.get_experiment_by_name(self.experiment_name)
                if exp is None:
                    raise exc
        if exp.lifecycle_stage != "active":
            raise UserError(f"MLflow experiment {self.experiment_name!r} is deleted; restore it "
                            f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or pass --experiment")
        if self.artifact_root and not _is_within(exp.artifact_location, self.artifact_root):
            raise UserError(f"MLflow experiment {self.experiment_name!r} stores its artifacts at "
                            f"{exp.artifact_location}, not under {self.artifact_root} (an experiment's artifact "
                            "location is fixed when it is created); pass another --experiment or drop "
                            f"--mlflow-artifact-location / {ARTIFACTS_ENV}")
        return exp.experiment_id

    # ---- finding / creating the run ----------------------------------------------------------------------
    def find_run(self, run_id: str):
        """The active MLflow run tagged with our run id in this experiment (the oldest, if a race made two)."""
        if "'" in run_id or "`" in run_id:
            raise UserError(f"run id {run_id!r} cannot be used as an MLflow filter value")
        found = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}'",
                                        max_results=10, order_by=["attributes.start_time ASC"])
        return found[0] if found else None

    def start_run(self, record: RunRecord):
        """Find or create the MLflow run of `record` and give it the params and tags. Returns (run, created)."""
        run = self.find_run(record.run_id)
        created = run is None
        if created:
            run = self.client.create_run(self.experiment_id, start_time=record.started_ms, run_name=record.run_id,
                                         tags={RUN_ID_TAG: record.run_id})
        self._log_params_and_tags(run, record)
        return self.client.get_run(run.info.run_id), created

    def _log_params_and_tags(self, run, record: RunRecord) -> None:
        from mlflow.entities import Param, RunTag
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

        params = {key: _clip(value, MAX_PARAM_VAL_LENGTH) for key, value in record.params.items()}
        old = run.data.params
        changed = [key for key in params if key in old and old[key] != params[key]]
        if changed:
            raise UserError(f"MLflow run {run.info.run_id} already has param {changed[0]}={old[changed[0]]} but "
                            f"{record.run_dir / 'config.yaml'} says {params[changed[0]]}: the config changed after "
                            "the last sync; sync into another --experiment")
        tags = dict(record.tags)
        tags.update(_mlflow_system_tags(record))
        new_params = [Param(k, v) for k, v in params.items() if k not in old]
        new_tags = [RunTag(k, _clip(v, MAX_TAG_VAL_LENGTH)) for k, v in tags.items() if run.data.tags.get(k) != v]
        for i in range(0, max(len(new_params), len(new_tags)), _BATCH):
            self.client.log_batch(run.info.run_id, params=new_params[i:i + _BATCH], tags=new_tags[i:i + _BATCH])

    # ---- metrics -----------------------------------------------------------------------------------------
    def log_epoch(self, mlflow_run_id: str, epoch: int, row: Dict[str, Any]) -> None:
        """One epoch's numeric metrics at step=epoch (what the live hook calls)."""
        from mlflow.entities import Metric

        now = _now_ms()
        metrics = [Metric(metric_key(k), float(v), now, int(epoch)) for k, v in row.items()
                   if k != "epoch" and is_number(v)]
        if metrics:
            self.client.log_batch(mlflow_run_id, metrics=metrics)

    def _log_missing_metrics(self, run, record: RunRecord) -> int:
        """History points (step = epoch) and final metrics that the MLflow run does not hold yet."""
        from mlflow.entities import Metric

        seen: Dict[str, Dict[int, List[float]]] = {}
        for key in run.data.metrics:
            for m in self.client.get_metric_history(run.info.run_id, key):
                seen.setdefault(key, {}).setdefault(m.step, []).append(m.value)
        last_epoch = max((row["epoch"] for row in record.history), default=0)
        points = [(metric_key(k), v, row["epoch"]) for row in record.history for k, v in row.items() if k != "epoch"]
        # A result metric that is also a per-epoch metric (val/mAP50 of the best epoch) is already a point of that
        # series; logging it again at the last step would change the series, not add a summary.
        per_epoch = history_names(record.history)
        points += [(metric_key(k), v, last_epoch) for k, v in record.final_metrics.items() if k not in per_epoch]
        now = _now_ms()
        missing = [Metric(k, v, now, step) for k, v, step in points
                   if not any(_same(v, old) for old in seen.get(k, {}).get(step, []))]
        for i in range(0, len(missing), 1000):
            self.client.log_batch(run.info.run_id, metrics=missing[i:i + 1000])
        return len(missing)

    # ---- whole-run sync ----------------------------------------------------------------------------------
    def sync(self, record: RunRecord, *, log_checkpoint: bool = False,
             register_model: Optional[str] = None) -> MlflowSyncResult:
        """Create or update the MLflow run of `record`: params, tags, metrics, files, status, then the registered
        model version. Every refusal (a running run, a changed checkpoint or export, a registered model of another
        task) comes before anything is logged."""
        from mlflow.exceptions import MlflowException

        from src.tracking import mlflow_model

        files = existed = None
        if register_model and record.status != "completed":
            raise UserError(f"run {record.run_id} has status {record.status!r}; only a completed run's "
                            "checkpoint can be registered (sync without --register-model, or finish the run)")
        if log_checkpoint or register_model:  # a missing or changed checkpoint fails before anything is logged
            if record.checkpoint is None:
                raise UserError(f"{record.run_dir} has no checkpoint yet; sync without --log-checkpoint")
            record.checkpoint_sha256()
        try:
            if register_model:
                files = mlflow_model.model_files(record)
                existed = mlflow_model.check_family(self.client, register_model, record)
            run, created = self.start_run(record)
            self._log_missing_metrics(run, record)
            self._log_artifacts(run, record, log_checkpoint)
            self._set_status(run, record)
            version = mlflow_model.register_version(self.client, run.info.run_id, register_model, record, files,
                                                    existed) if register_model else None
        except (MlflowException, OSError) as exc:
            raise UserError(f"MLflow sync of {record.run_id} to {self.tracking_uri} failed: "
                            f"{short_error(exc)}") from None
        return MlflowSyncResult(run_id=record.run_id, mlflow_run_id=run.info.run_id, experiment_id=self.experiment_id,
                                tracking_uri=self.tracking_uri, created=created, model_version=version)

    def _log_artifacts(self, run, record: RunRecord, with_checkpoint: bool) -> None:
        """The run's small files and ultralytics'/evaluations' files every time (they change while it trains);
        the checkpoint only when it changed."""
        for path in record.artifacts:
            self.client.log_artifact(run.info.run_id, str(path))
        for path, folder in record.extra_files:
            self.client.log_artifact(run.info.run_id, str(path), folder)
        if not with_checkpoint:
            return
        sha = record.checkpoint_sha256()
        if run.data.tags.get(LOGGED_CHECKPOINT_TAG) != sha:
            self.client.log_artifact(run.info.run_id, str(record.checkpoint), CHECKPOINT_ARTIFACT_DIR)
            self.client.set_tag(run.info.run_id, LOGGED_CHECKPOINT_TAG, sha)

    def _set_status(self, run, record: RunRecord) -> None:
        status = _STATUS.get(record.status)
        moved = record.finished_ms is not None and run.info.end_time != record.finished_ms
        if status and (run.info.status != status or moved):
            self.client.set_terminated(run.info.run_id, status, end_time=record.finished_ms)


def sync_mlflow(run: str, *, tracking_uri: Optional[str] = None, experiment: Optional[str] = None,
                register_model: Optional[str] = None, log_checkpoint: bool = False,
                timeout: float = 5.0, artifact_location: Optional[str] = None) -> MlflowSyncResult:
    """Sync one run (id or directory). Tracking URI / experiment default to the run's config `tracking.mlflow`,
    then MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_NAME, then MLflow's default / "street-scene"; the artifact
    location of a new experiment to $STREET_SCENE_MLFLOW_ARTIFACTS, else see experiment_artifact_location."""
    from src.tracking.common import load_run, tracking_settings

    record = load_run(run)
    settings, _ = tracking_settings(record.config)
    target = MlflowTarget(tracking_uri or settings.tracking_uri, experiment or settings.experiment, timeout,
                          artifact_location)
    return target.sync(record, log_checkpoint=log_checkpoint, register_model=register_model)


def experiment_artifact_location(root: Optional[str], tracking_uri: str, experiment: str) -> Optional[str]:
    """Where a new experiment stores artifacts: `<root>/<experiment>`; without a root, beside a sqlite store
    (`<db folder>/mlartifacts/<experiment>`, never MLflow's `./mlruns` of the current folder); for file stores
    and servers, None (the store decides: its own folder, or the server's artifact root)."""
    folder = _SAFE_DIR_CHARS.sub("_", experiment).strip("._") or "experiment"
    if root:
        if "://" in root:
            return root.rstrip("/") + "/" + folder
        return str(Path(root).expanduser().resolve() / folder)
    if tracking_uri.startswith("sqlite:///"):
        db = tracking_uri[len("sqlite:///"):].split("?", 1)[0]
        if db and db != ":memory:":
            return str(Path(db).expanduser().resolve().parent / SQLITE_ARTIFACTS_DIR / folder)
    return None


def _is_within(location: Optional[str], root: str) -> bool:
    def plain(uri: str) -> str:
        uri = uri[len("file://"):] if uri.startswith("file://") else uri
        return uri.rstrip("/") if "://" in uri else str(Path(uri).expanduser().resolve())

    if not location:
        return False
    location, root = plain(location), plain(root)
    return location == root or location.startswith(root.rstrip("/") + "/")


def _mlflow_system_tags(record: RunRecord) -> Dict[str, str]:
    """MLflow's own tag names, so its UI shows the commit and where the run came from."""
    meta = record.metadata
    tags = {"mlflow.source.name": str(record.run_dir), "mlflow.source.type": "LOCAL",
            TAG_PREFIX + "run_dir": str(record.run_dir)}
    if meta.get("git_commit"):
        tags["mlflow.source.git.commit"] = str(meta["git_commit"])
    if meta.get("git_branch"):
        tags["mlflow.source.git.branch"] = str(meta["git_branch"])
    return tags


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
