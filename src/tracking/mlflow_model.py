"""A run's registered MLflow model: a pyfunc model (src/tracking/pyfunc_model.py) holding the checkpoint, the
exported ONNX when `exports.json` lists one, the street-scene code that runs it, and pinned requirements.

Nothing here touches the network: requirements are pinned from the installed versions (MLflow does not infer
or resolve them), and no input example is run at log time. A version is tagged with the run id, config hash,
task, subtask and the sha256 of every weights file it holds; a name holds versions of one task and subtask only.
"""

import hashlib
import tempfile
import warnings
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Dict, List, Optional

from src.common.errors import UserError
from src.tracking.common import TAG_PREFIX, RunRecord

MODEL_ARTIFACT_DIR = "model"  # runs:/<id>/model/<content key>: one folder per distinct set of weights
MODEL_FORMAT = "pyfunc"  # tag value: versions registered before the pyfunc wrapper held a bare checkpoint
RUNTIME_PACKAGES = ("torch", "torchvision", "ultralytics", "numpy", "pillow", "PyYAML", "pydantic", "pandas",
                    "mlflow")
FAMILY_KEYS = ("task", "subtask")


@dataclass(frozen=True)
class ModelFiles:
    checkpoint: Path
    checkpoint_sha256: str
    onnx: Optional[Path] = None
    onnx_sha256: Optional[str] = None

    @property
    def key(self) -> str:
        """Names the artifact folder: the same weights always land in the same folder."""
        return hashlib.sha256(f"{self.checkpoint_sha256}:{self.onnx_sha256 or ''}".encode()).hexdigest()[:12]


def model_files(record: RunRecord) -> ModelFiles:
    """The weights a version of this run holds, each checked against its recorded sha256 (UserError)."""
    sha = record.checkpoint_sha256()
    onnx, onnx_sha = latest_onnx_export(record.run_dir, sha)
    return ModelFiles(record.checkpoint, sha, onnx, onnx_sha)


def latest_onnx_export(run_dir: Path, checkpoint_sha256: str):
    """(path, sha256) of the newest ONNX export of this checkpoint that `exports.json` records, or (None, None).
    Exports of other checkpoints of the run (checkpoint_epoch_N.pth) are not this model."""
    from src.common.checkpoint import file_sha256
    from src.inference.exports_record import EXPORTS_FILE, read_exports

    onnx = [e for e in read_exports(run_dir) if e.get("format") == "onnx" and isinstance(e.get("path"), str)
            and e.get("checkpoint_sha256") == checkpoint_sha256]
    if not onnx:
        return None, None
    latest = max(onnx, key=lambda e: str(e.get("created_at") or ""))
    file = Path(latest["path"]) if Path(latest["path"]).is_absolute() else run_dir / latest["path"]
    where = run_dir / EXPORTS_FILE
    if not file.is_file():
        raise UserError(f"{where} lists {file}, which is missing; export again (street-scene export) or move "
                        f"{where} aside")
    sha = file_sha256(file)
    if sha != latest.get("sha256"):
        raise UserError(f"{file} does not match the sha256 recorded in {where}: it changed after export; "
                        "export again")
    return file, sha


def check_family(client, name: str, record: RunRecord) -> bool:
    """Refuse (UserError) when `name` holds a model of another task or subtask, or versions street-scene did not
    register. Returns whether the registered model exists. Reads only: called before anything is logged."""
    from mlflow.exceptions import MlflowException

    if "'" in name or "`" in name:
        raise UserError(f"registered model name {name!r} cannot contain quotes; choose another --register-model")
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    ours = {k: record.tags.get(TAG_PREFIX + k) for k in FAMILY_KEYS}
    holders = [("the registered model", model.tags)]
    holders += [(f"version {v.version}", v.tags) for v in client.search_model_versions(f"name='{name}'")]
    for what, tags in holders:
        theirs = {k: tags.get(TAG_PREFIX + k) for k in FAMILY_KEYS}
        if what != "the registered model" and None in theirs.values():
            raise UserError(f"MLflow model {name!r} {what} was not registered by street-scene (no task tags); "
                            "register this run under another --register-model name")
        if None not in theirs.values() and theirs != ours:
            raise UserError(f"MLflow model {name!r} holds {theirs['task']} models ({theirs['subtask']}), not "
                            f"{ours['task']} ({ours['subtask']}) like run {record.run_id}; register it under "
                            "another --register-model name")
    return True


def version_tags(record: RunRecord, files: ModelFiles) -> Dict[str, str]:
    keys = ("run_id", "config_hash", "task", "subtask")
    tags = {TAG_PREFIX + k: record.tags[TAG_PREFIX + k] for k in keys if TAG_PREFIX + k in record.tags}
    tags[TAG_PREFIX + "checkpoint_sha256"] = files.checkpoint_sha256
    if files.onnx_sha256:
        tags[TAG_PREFIX + "onnx_sha256"] = files.onnx_sha256
    tags[TAG_PREFIX + "model_format"] = MODEL_FORMAT
    return tags


def register_version(client, mlflow_run_id: str, name: str, record: RunRecord, files: ModelFiles,
                     existed: bool) -> str:
    """The version of `name` holding exactly these weights (reused when one exists), else a new one. A registered
    model this call created is deleted again when the version cannot be created."""
    from mlflow.exceptions import MlflowException

    wanted = version_tags(record, files)
    for version in client.search_model_versions(f"name='{name}' and run_id='{mlflow_run_id}'"):
        same = all(version.tags.get(k) == v for k, v in wanted.items())
        if same and version.tags.get(TAG_PREFIX + "onnx_sha256") == files.onnx_sha256:
            return str(version.version)
    artifact_path = f"{MODEL_ARTIFACT_DIR}/{files.key}"
    with tempfile.TemporaryDirectory(prefix="street-scene-model-") as tmp:
        local = Path(tmp) / "model"
        save_pyfunc(local, record, files)
        client.log_artifacts(mlflow_run_id, str(local), artifact_path)
    if not existed:
        family = {TAG_PREFIX + k: record.tags[TAG_PREFIX + k] for k in FAMILY_KEYS if TAG_PREFIX + k in record.tags}
        try:
            client.create_registered_model(name, tags=family, description="street-scene models (mlflow.pyfunc: "
                                           "load_model(...).predict(images))")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # a concurrent sync created it: check it again
                raise
            check_family(client, name, record)
            existed = True
    try:
        version = client.create_model_version(
            name, source=f"runs:/{mlflow_run_id}/{artifact_path}", run_id=mlflow_run_id, tags=wanted,
            description=f"{record.checkpoint.name} of street-scene run {record.run_id} (mlflow.pyfunc)")
    except BaseException:
        if not existed:
            client.delete_registered_model(name)  # nothing half-registered is left behind
        raise
    return str(version.version)


def save_pyfunc(path: Path, record: RunRecord, files: ModelFiles) -> None:
    """Write the pyfunc model folder (models from code: nothing is pickled)."""
    import mlflow

    import src

    artifacts = {"checkpoint": str(files.checkpoint)}
    if files.onnx is not None:
        artifacts["onnx"] = str(files.onnx)
    meta = {"street_scene": {k: record.tags.get(TAG_PREFIX + k) for k in ("run_id", "config_hash", "task",
                                                                            "subtask")}}
    meta["street_scene"].update(checkpoint_sha256=files.checkpoint_sha256, onnx_sha256=files.onnx_sha256)
    with warnings.catch_warnings():  # running an input example would load the model while logging it
        warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
        mlflow.pyfunc.save_model(
            str(path), python_model=str(Path(__file__).with_name("pyfunc_entry.py")), artifacts=artifacts,
            code_paths=[str(Path(src.__file__).parent)], pip_requirements=pip_requirements(files.onnx is not None),
            metadata=meta, model_config={"weights": "checkpoint"}, signature=params_signature())


def params_signature():
    """Only the predict params (conf, iou, imgsz; None = the model's defaults): MLflow passes params only when the
    signature declares them. No input schema, since the model takes arrays, lists and DataFrames alike."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    return ModelSignature(params=ParamSchema([ParamSpec("conf", "double", None), ParamSpec("iou", "double", None),
                                              ParamSpec("imgsz", "long", None)]))


def pip_requirements(with_onnx: bool) -> List[str]:
    """name==version of what loading and running the model needs, as installed here (never resolved online)."""
    names = RUNTIME_PACKAGES + (("onnxruntime",) if with_onnx else ())
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={importlib_metadata.version(name)}")
        except importlib_metadata.PackageNotFoundError:
            continue
    return pins
