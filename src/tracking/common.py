"""What a run directory says to an experiment tracker: params, metric history, final metrics, tags, files.

Shared by the MLflow and W&B syncs and the live hooks, so both tools get the same picture of a run. Stdlib
only: reading a run never imports a tracker.
"""

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from src.common.dictdiff import flatten
from src.common.errors import UserError
from src.common.image_files import PILLOW_IMAGE_SUFFIXES, is_image
from src.common.run_dir import (CONFIG_FILE, CURVES_FILE, ENVIRONMENT_FILE, EVALUATIONS_DIR, GIT_DIFF_FILE,
                                METADATA_FILE, METRICS_FILE, OVERRIDES_FILE, ULTRALYTICS_DIR, RunDir)

TAG_PREFIX = "street_scene."
# The run's own files a tracker gets (the checkpoint only on request: it can be large).
ARTIFACT_FILES = (CONFIG_FILE, METADATA_FILE, OVERRIDES_FILE, GIT_DIFF_FILE, ENVIRONMENT_FILE, METRICS_FILE,
                  CURVES_FILE)
# What ultralytics and evaluations wrote inside the run dir (args.yaml, results.csv, confusion matrices, PR curves,
# results.png, label and prediction mosaics): uploaded under the same folder names.
ULTRALYTICS_FILES = ("args.yaml", "results.csv")
DEFAULT_PROJECT = "street-scene"  # MLflow experiment / W&B project when nothing else names one
WANDB_MODES = ("offline", "online")


class TrackerUnavailable(UserError):
    """The tracker itself cannot be used (unreachable server, no credentials): every other run would fail too."""


@dataclass
class RunRecord:
    """Everything a tracker is told about one run, read from its directory (nothing is written there)."""

    run_dir: Path
    run_id: str
    status: str  # running / completed / failed (as metadata.yaml says)
    metadata: Dict[str, Any]
    config: Dict[str, Any]
    params: Dict[str, str]  # dotted config key -> value in JSON form
    history: List[Dict[str, Any]]  # metrics.csv rows: {"epoch": int, metric: number}
    final_metrics: Dict[str, float]  # result.metrics (numbers), under the names metrics.csv and the registry use
    tags: Dict[str, str]
    artifacts: List[Path]
    checkpoint: Optional[Path]  # best_model.pth when it exists
    started_ms: Optional[int] = None
    finished_ms: Optional[int] = None
    extra_files: List[Tuple[Path, str]] = field(default_factory=list)  # (file, folder in the tracker)
    _sha256: Optional[str] = field(default=None, repr=False, compare=False)

    def checkpoint_sha256(self) -> Optional[str]:
        """sha256 of the checkpoint file (hashed once); a mismatch with metadata's `result.checkpoint_sha256`
        is an error."""
        if self.checkpoint is None:
            return None
        if self._sha256 is not None:
            return self._sha256
        from src.common.checkpoint import file_sha256

        actual = file_sha256(self.checkpoint)
        result = self.metadata.get("result")
        recorded = result.get("checkpoint_sha256") if isinstance(result, dict) else None
        if self.status == "completed" and recorded and recorded != actual:
            raise UserError(f"{self.checkpoint} does not match the sha256 recorded in metadata.yaml "
                            f"({str(recorded)[:12]}... vs {actual[:12]}...): the checkpoint changed after training; "
                            "restore it or train again")
        self._sha256 = actual
        return actual


def load_run(ref: str, root: Optional[Path] = None) -> RunRecord:
    """A run id (under the output root) or a run dir -> its RunRecord. Bad input is a one-line UserError."""
    from src.common.metadata import read_metadata
    from src.common.run_dir import BEST_CHECKPOINT, read_metrics_csv, resolve_run

    run_dir = resolve_run(str(ref), root)
    meta = read_metadata(run_dir)
    config = RunDir(run_dir).read_config()
    history = [_numeric_row(row) for row in read_metrics_csv(run_dir / METRICS_FILE)]
    history = [row for row in history if row is not None]
    result = meta.get("result") if isinstance(meta.get("result"), dict) else {}
    checkpoint = run_dir / str(result.get("checkpoint") or BEST_CHECKPOINT)
    return RunRecord(
        run_dir=run_dir,
        run_id=str(meta.get("run_id") or run_dir.name),
        status=str(meta.get("status") or "unknown"),
        metadata=meta,
        config=config,
        params=config_params(config),
        history=history,
        final_metrics=final_metrics(result.get("metrics") or {}, history),
        tags=run_tags(meta, run_dir.name),
        artifacts=[run_dir / name for name in ARTIFACT_FILES if (run_dir / name).is_file()],
        checkpoint=checkpoint if checkpoint.is_file() else None,
        started_ms=_epoch_ms(meta.get("started_at")),
        finished_ms=_epoch_ms(meta.get("finished_at")),
        extra_files=run_extra_files(run_dir),
    )


def run_extra_files(run_dir: Path) -> List[Tuple[Path, str]]:
    """(file, tracker folder) for ultralytics' own files (`ultralytics/`: args.yaml, results.csv, plots; never its
    weights) and for evaluations (`evaluations/*.json` and each evaluation's plots and prediction images)."""
    out: List[Tuple[Path, str]] = []
    ultra = run_dir / ULTRALYTICS_DIR
    if ultra.is_dir():
        out += [(p, ULTRALYTICS_DIR) for p in sorted(ultra.iterdir())
                if p.is_file() and (p.name in ULTRALYTICS_FILES or is_image(p, PILLOW_IMAGE_SUFFIXES))]
    evaluations = run_dir / EVALUATIONS_DIR
    if evaluations.is_dir():
        for entry in sorted(evaluations.iterdir()):
            if entry.is_file() and entry.suffix == ".json":
                out.append((entry, EVALUATIONS_DIR))
            elif entry.is_dir():
                out += [(p, f"{EVALUATIONS_DIR}/{entry.name}") for p in sorted(entry.iterdir())
                        if p.is_file() and is_image(p, PILLOW_IMAGE_SUFFIXES)]
    return out


def config_params(config: Dict[str, Any]) -> Dict[str, str]:
    """Dotted keys with JSON values: `1e-4` -> "0.0001", True -> "true", None -> "null", "SGD" -> "\"SGD\"".

    Keeping the JSON form is what keeps the type: "1" (a string) and 1 (a number) stay different.
    """
    return {key: to_json_text(value) for key, value in sorted(flatten(config).items())}


def to_json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def final_metrics(metrics: Dict[str, Any], history: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """Numeric `result.metrics`, under their own names (one name per metric everywhere). `val/*` entries are the
    best epoch's values, which the history already holds at that epoch's step."""
    return {str(name): float(value) for name, value in metrics.items() if is_number(value)}


def history_names(history: Sequence[Dict[str, Any]]) -> set:
    return {key for row in history for key in row if key != "epoch"}


def run_tags(meta: Dict[str, Any], dir_name: str) -> Dict[str, str]:
    """Key-value tags: our run id (the key an idempotent sync finds the tracker's run by), config hash, task,
    git state, seed, and dataset fingerprints when the run recorded them."""
    fields = {
        "run_id": meta.get("run_id") or dir_name,
        "run_name": meta.get("run_name"),
        "config_hash": meta.get("config_hash"),
        "task": meta.get("task"),
        "subtask": meta.get("subtask"),
        "status": meta.get("status"),
        "seed": meta.get("seed"),
        "git_commit": meta.get("git_commit"),
        "git_branch": meta.get("git_branch"),
        "git_dirty": meta.get("git_dirty"),
        "checkpoint_sha256": (meta.get("result") or {}).get("checkpoint_sha256")
        if isinstance(meta.get("result"), dict) else None,
    }
    tags = {TAG_PREFIX + key: _tag_text(value) for key, value in fields.items() if value is not None}
    for key, value in _fingerprint_tags(meta.get("dataset_fingerprints")):
        tags[TAG_PREFIX + "dataset." + key] = value
    return tags


def _fingerprint_tags(fingerprints: Any) -> Iterable[Tuple[str, str]]:
    """{split: {files, bytes, sha256, ...}} (or a list of them per split) -> ("train.sha256", "..."), ..."""
    if not isinstance(fingerprints, dict):
        return []
    out = []
    for split, value in fingerprints.items():
        parts = value if isinstance(value, list) else [value]
        for i, part in enumerate(parts):
            if not isinstance(part, dict):
                continue
            prefix = f"{split}.{i}" if isinstance(value, list) else str(split)
            out += [(f"{prefix}.{k}", _tag_text(part[k])) for k in ("sha256", "files", "bytes", "version")
                    if part.get(k) is not None]
    return out


def _tag_text(value: Any) -> str:
    return value if isinstance(value, str) else to_json_text(value)


def is_number(value: Any) -> bool:
    """A metric value: int or float, not bool (True is not 1.0 for a tracker)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numeric_row(row: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """A metrics.csv row with its numeric cells only; None when it has no usable epoch."""
    epoch = row.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        return None
    return {"epoch": epoch, **{k: float(v) for k, v in row.items() if k != "epoch" and is_number(v)}}


def _epoch_ms(iso: Any) -> Optional[int]:
    if not isinstance(iso, str):
        return None
    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1000)
    except ValueError:
        return None


def short_error(exc: BaseException) -> str:
    """An exception as one short line (tracker messages can span pages)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# ---- settings: CLI flag > the run's config `tracking.*` > environment > default ------------------------------
@dataclass(frozen=True)
class MlflowSettings:
    enabled: bool = False
    tracking_uri: Optional[str] = None  # None: MLFLOW_TRACKING_URI, else MLflow's default
    experiment: str = DEFAULT_PROJECT


@dataclass(frozen=True)
class WandbSettings:
    enabled: bool = False
    project: str = DEFAULT_PROJECT
    entity: Optional[str] = None
    mode: str = "offline"


_MLFLOW_KEYS = {"enabled": bool, "tracking_uri": str, "experiment": str}
_WANDB_KEYS = {"enabled": bool, "project": str, "entity": str, "mode": str}


def tracking_settings(config: Dict[str, Any]) -> Tuple[MlflowSettings, WandbSettings]:
    """The config's `tracking` section, checked (unknown keys and wrong types are a UserError)."""
    section = config.get("tracking") or {}
    if not isinstance(section, dict):
        raise UserError(f"config `tracking` must be a mapping with mlflow/wandb sections, got {section!r}")
    unknown = sorted(set(section) - {"mlflow", "wandb"})
    if unknown:
        raise UserError(f"unknown config key tracking.{unknown[0]}; tracking has only `mlflow` and `wandb`")
    ml = _checked(section.get("mlflow"), "tracking.mlflow", _MLFLOW_KEYS)
    wb = _checked(section.get("wandb"), "tracking.wandb", _WANDB_KEYS)
    mode = wb.get("mode") or os.environ.get("WANDB_MODE") or "offline"
    if mode not in WANDB_MODES:
        raise UserError(f"tracking.wandb.mode (or WANDB_MODE) is {mode!r}; use offline or online")
    mlflow_settings = MlflowSettings(
        enabled=bool(ml.get("enabled", False)), tracking_uri=ml.get("tracking_uri"),
        experiment=ml.get("experiment") or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_PROJECT)
    wandb_settings = WandbSettings(
        enabled=bool(wb.get("enabled", False)), entity=wb.get("entity") or os.environ.get("WANDB_ENTITY"),
        project=wb.get("project") or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT, mode=mode)
    return mlflow_settings, wandb_settings


def _checked(section: Any, where: str, keys: Dict[str, type]) -> Dict[str, Any]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise UserError(f"config `{where}` must be a mapping, got {section!r}")
    for key, value in section.items():
        if key not in keys:
            raise UserError(f"unknown config key {where}.{key}; known: {', '.join(keys)}")
        if value is not None and not isinstance(value, keys[key]):
            raise UserError(f"config {where}.{key} must be a {keys[key].__name__} (or null), got {value!r}")
    return section
