"""The shared evaluation lifecycle: load a checkpoint, check it belongs here, verify config, evaluate, save."""

import json
import math
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from src.common.atomic import atomic_write_text
from src.common.checkpoint import load_checkpoint
from src.common.config_manager import ConfigManager
from src.common.dictdiff import format_changes
from src.common.errors import UserError
from src.common.report import note, warn
from src.common.run_dir import EVALUATIONS_DIR
from src.pipelines.context import EvalContext
from src.pipelines.job import open_job, resolve_device
from src.tasks.contract import EvalOutcome, PreparedData


class ConfigMismatchError(UserError):
    """--strict evaluation of a checkpoint trained with a different config."""


@dataclass
class EvalRequest:
    config_path: Path
    task: str
    subtask: Optional[str]
    test_data: Optional[str]
    checkpoint_path: Path
    data_yaml: Optional[str] = None
    overrides: Sequence[str] = ()
    seed: Optional[int] = None  # --seed, resolved like training's (cli > STREET_SCENE_SEED > config > 42)
    verify_config: bool = False
    strict: bool = False
    allow_legacy: bool = False
    save_results: bool = True


def config_mismatch_lines(cm: ConfigManager, ckpt: Dict[str, Any]) -> List[str]:
    """The documented `Config hash mismatch!` warning plus one `key: checkpoint -> current` line per difference;
    [] when the hashes match."""
    current = cm.get_config_hash()
    if ckpt["config_hash"] == current:
        return []
    warning = (f"Config hash mismatch! Checkpoint config hash: {ckpt['config_hash']}, "
               f"Current config hash: {current}. This may affect reproducibility.")
    return [warning] + ["  " + line for line in format_changes(cm.diff(ckpt["config"]))]


def evaluate(request: EvalRequest) -> Dict[str, Any]:
    """Evaluate a checkpoint on test data; returns the metrics dict (also saved beside the checkpoint)."""
    job = open_job(request.config_path, request.task, request.subtask, request.overrides, request.seed)
    cm, config, task_module, subtask = job.cm, job.config, job.task_module, job.subtask
    if request.allow_legacy:
        if not task_module.ACCEPTS_LEGACY_CHECKPOINTS:  # refuse before anything is unpickled
            raise UserError(f"--allow-legacy-checkpoint is not supported for --task {request.task}: only street-scene "
                            "checkpoints can be evaluated; drop the flag")
        task_module.before_legacy_load()  # unpickling imports the library that wrote the file
    ckpt = load_checkpoint(Path(request.checkpoint_path), allow_legacy=request.allow_legacy)
    if ckpt.get("legacy"):
        warn(f"warning: {request.checkpoint_path} is a legacy checkpoint: config verification skipped")
    else:
        _check_checkpoint_matches(ckpt, request.task, subtask, request.checkpoint_path)
        if request.verify_config:
            lines = config_mismatch_lines(cm, ckpt)
            for line in lines:
                note(line)
            if lines and request.strict:
                raise ConfigMismatchError(f"config hash mismatch for {request.checkpoint_path} (--strict); "
                                          f"evaluate with --config <run dir>/config.yaml")
            if not lines:
                note(f"Config hash verified: {ckpt['config_hash']}")
    data = task_module.prepare_eval(config, subtask, request.test_data, request.data_yaml, ckpt)
    ckpt_path = Path(request.checkpoint_path).resolve()
    fingerprints = test_data_fingerprints(data) if request.save_results or request.verify_config else None
    if request.verify_config:
        for line in previous_test_data_lines(ckpt_path, fingerprints):
            note(line)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S_%f")
    out_dir = _evaluations_dir(ckpt_path) / f"{stamp}_{ckpt_path.stem}"
    temporary = out_dir.parent.parent != ckpt_path.parent
    try:
        ctx = EvalContext(config=config, task=request.task, subtask=subtask,
                          device=resolve_device(config["device"]), checkpoint=ckpt,
                          checkpoint_path=ckpt_path, data=data, output_dir=out_dir)
        result = evaluation_result(request, subtask, ckpt, task_module.evaluate(ctx))
    finally:
        if temporary:
            shutil.rmtree(out_dir.parent.parent, ignore_errors=True)
    if request.save_results and not temporary:
        _save_results(out_dir.with_suffix(".json"), result, data, fingerprints)
    return result


def _evaluations_dir(ckpt_path: Path) -> Path:
    """`<checkpoint folder>/evaluations`, or a temporary folder when the checkpoint's folder is read-only (results
    are then printed but not saved; a model store mounted read-only must still be evaluable)."""
    folder = ckpt_path.parent / EVALUATIONS_DIR
    try:
        folder.mkdir(exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        return folder
    except OSError as exc:
        warn(f"warning: cannot write {folder} ({exc.strerror}); evaluation results will not be saved beside the "
             "checkpoint")
        return Path(tempfile.mkdtemp(prefix="street-scene-eval-")) / EVALUATIONS_DIR


def evaluation_result(request: EvalRequest, subtask: str, ckpt: Dict[str, Any], found: EvalOutcome
                      ) -> Dict[str, Any]:
    """The one shape every task's evaluation has: what was evaluated, then `metrics` (`test/<name>`),
    `per_class` ({class: {`test/<name>`: value}}) and `details`. NaN (a class absent from the test set) is null."""
    return {
        "task": request.task, "subtask": subtask, "split": "test",
        "run_id": (ckpt.get("metadata") or {}).get("run_id"),
        "checkpoint": str(Path(request.checkpoint_path).resolve()),
        "checkpoint_config_hash": ckpt.get("config_hash"),
        "metrics": _finite_or_none(found.metrics),
        "per_class": _finite_or_none(found.per_class),
        "details": _finite_or_none(found.details),
    }


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


_RESULT_NAME = re.compile(r"^\d{8}_\d{6}_\d{6}_(.+)\.json$")  # <stamp>_<checkpoint stem>.json, see evaluate()


def test_data_fingerprints(data: PreparedData) -> Optional[Dict[str, Any]]:
    """{"test": fingerprint} of the split prepare_eval resolved (its `record["test"]` path), None without one."""
    from src.common.fingerprint import fingerprint_splits

    path = data.record.get("test")
    return fingerprint_splits({"test": path}, data.names) if path else None


def previous_test_data_lines(ckpt_path: Path, fingerprints: Optional[Dict[str, Any]]) -> List[str]:
    """Compare the test data with the latest earlier saved evaluation of the same checkpoint; [] if none."""
    from src.common.fingerprint import compare_split_fingerprints

    folder = ckpt_path.parent / EVALUATIONS_DIR
    found = folder.glob("*.json") if folder.is_dir() else []
    names = sorted(p.name for p in found if _is_result_of(p.name, ckpt_path.stem))
    records = [(n, r) for n, r in ((n, _read_json(folder / n)) for n in names) if isinstance(r, dict)]
    if fingerprints is None or not records:
        return []
    usable = [(n, r) for n, r in records if isinstance(r.get("test_data_fingerprints"), dict)]
    if not usable:
        return [f"Test data not compared: the {len(records)} earlier evaluation(s) of this checkpoint recorded no "
                "test-data fingerprint"]
    name, latest = usable[-1]
    diffs = compare_split_fingerprints(latest["test_data_fingerprints"], fingerprints)
    if not diffs:
        return [f"Test data matches the previous evaluation of this checkpoint (evaluations/{name})"]
    header = (f"Test data differs from the previous evaluation of this checkpoint (evaluations/{name}, "
              f"{latest.get('evaluated_at')}, test data {(latest.get('test_data') or {}).get('test')}):")
    return [header] + [f"  {line}" for line in diffs]


def _is_result_of(filename: str, stem: str) -> bool:
    match = _RESULT_NAME.match(filename)
    return bool(match) and match.group(1) == stem


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # an unreadable earlier result is just not compared


def _check_checkpoint_matches(ckpt: Dict[str, Any], task: str, subtask: str, path) -> None:
    if ckpt["task"] != task:
        raise UserError(f"checkpoint {path} is a {ckpt['task']} model, but --task is {task}")
    if ckpt["subtask"] != subtask:
        raise UserError(f"checkpoint {path} was trained for {ckpt['subtask']}, but the evaluation is for "
                        f"{subtask}; pass --{task}-task {ckpt['subtask']}")


def _save_results(path: Path, result: Dict[str, Any], data: PreparedData,
                  fingerprints: Optional[Dict[str, Any]] = None) -> None:
    record = {**result, "test_data": data.record, "test_data_fingerprints": fingerprints,
              "evaluated_at": datetime.now().isoformat(timespec="seconds")}
    try:
        path.parent.mkdir(exist_ok=True)  # <checkpoint dir>/evaluations/; atomic writes never create folders
        atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")  # class-id order kept
    except OSError as exc:  # a read-only model store must not make evaluation fail
        warn(f"warning: could not save evaluation results to {path}: {exc.strerror}")
