"""`load_predictor(ref)`: a trained model ready to predict on in-memory images, with its provenance.

`ref` is a street-scene checkpoint (`best_model.pth`), a run id or run directory (its best_model.pth), or an ONNX
file written by `street-scene export` (run with onnxruntime). Checkpoints load weights-only; ONNX metadata is read
as JSON. The same pre/post-processing serves both, so a checkpoint and its export give the same results.

Detection records: {"image", "width", "height", "detections": [{"class_id", "class_name", "confidence",
"box_xyxy"}]}, boxes in the image's own pixels. Segmentation records: {"image", "width", "height",
"mask": HxW uint8 class ids, "class_fractions": {class name: fraction of pixels}}.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from src.common.errors import UserError
from src.common.run_dir import BEST_CHECKPOINT

TASKS = ("detection", "segmentation")


@dataclass
class Predictor:
    task: str  # detection / segmentation
    subtask: str
    class_names: List[str]
    provenance: Dict[str, Any]  # run_id, config_hash, checkpoint_sha256, checkpoint, task, subtask, ...
    backend: Any = field(repr=False)  # backends.TorchBackend or OnnxBackend
    imgsz: Optional[Tuple[int, int]] = None  # detection: trained size; segmentation: None = the image's own size
    preprocessing: Dict[str, Any] = field(default_factory=dict)
    model_spec: Optional[Dict[str, Any]] = field(default=None, repr=False)  # checkpoints only (export needs it)
    model_state: Optional[Dict[str, Any]] = field(default=None, repr=False)
    config: Optional[Dict[str, Any]] = field(default=None, repr=False)  # checkpoints: the config it trained with
    data_record: Optional[Dict[str, Any]] = field(default=None, repr=False)  # checkpoints: the data paths it used

    @property
    def format(self) -> str:
        return self.backend.kind  # "torch" or "onnx"

    def predict_arrays(self, images: Sequence[Any], conf: Optional[float] = None, iou: Optional[float] = None,
                       imgsz: Optional[int] = None, names: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
        """One record per HxWx3 uint8 RGB image; `names` label the records' "image" (default: the index)."""
        labels = list(names) if names is not None else [str(i) for i in range(len(images))]
        return [self.predict_one(image, label, conf, iou, imgsz) for image, label in zip(images, labels)]

    def predict_one(self, image, label: str, conf: Optional[float] = None, iou: Optional[float] = None,
                    imgsz: Optional[int] = None) -> Dict[str, Any]:
        image = check_image(image, label)
        record = {"image": label, "width": int(image.shape[1]), "height": int(image.shape[0])}
        if self.task == "detection":
            from src.inference import detection

            size = self.input_size(imgsz)
            conf = detection.DEFAULT_CONF if conf is None else float(conf)
            iou = detection.DEFAULT_IOU if iou is None else float(iou)
            record["detections"] = detection.predict_one(self.backend, image, self.class_names, size, conf, iou)
        else:
            from src.inference import segmentation

            record.update(segmentation.predict_one(self.backend, image, self.class_names, self.input_size(imgsz)))
        return record

    def input_size(self, imgsz: Optional[int]) -> Optional[Tuple[int, int]]:
        """The model input size a prediction uses; a fixed-size export refuses any other `imgsz`."""
        fixed = self.backend.input_hw
        if fixed is not None:
            if imgsz is not None and (imgsz, imgsz) != tuple(fixed):
                raise UserError(f"{self.provenance.get('checkpoint')} was exported for {fixed[0]}x{fixed[1]} inputs; "
                                f"drop --imgsz {imgsz} or export again with --imgsz {imgsz} (or --dynamic)")
            return tuple(fixed)
        if self.task == "detection":
            from src.inference.detection import resolve_imgsz

            return resolve_imgsz(imgsz, self.imgsz[0] if self.imgsz else 640)
        if imgsz is not None and (not isinstance(imgsz, int) or imgsz < 1):
            raise UserError(f"--imgsz {imgsz!r} must be a positive integer")
        return (imgsz, imgsz) if imgsz else None


def check_image(image, label: str):
    import numpy as np

    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        what = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise UserError(f"image {label}: expected an HxWx3 uint8 RGB array, got {what}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise UserError(f"image {label} is empty ({image.shape[0]}x{image.shape[1]})")
    return image


def load_predictor(ref: Union[str, Path], task: Optional[str] = None, device: str = "cpu") -> Predictor:
    """The model `ref` names; with `task`, a model of the other task is refused (UserError)."""
    path = resolve_model_path(ref)
    predictor = _load_onnx(path) if path.suffix.lower() == ".onnx" else _load_checkpoint(path, device)
    if task is not None and predictor.task != task:
        raise UserError(f"{path} is a {predictor.task} model ({predictor.subtask}), but a {task} model is required "
                        f"here; pass a {task} checkpoint")
    return predictor


def resolve_model_path(ref: Union[str, Path]) -> Path:
    """A file as given; a run directory or run id -> its best_model.pth."""
    from src.common.run_dir import resolve_run

    path = Path(ref).expanduser()
    if path.is_file():
        return path.resolve()
    if path.suffix.lower() in (".pth", ".pt", ".onnx") or not str(ref).strip():
        raise UserError(f"checkpoint not found: {ref}; give a best_model.pth, a run id or an exported .onnx")
    run_dir = resolve_run(str(ref))
    best = run_dir / BEST_CHECKPOINT
    if not best.is_file():
        raise UserError(f"run {run_dir.name} has no {BEST_CHECKPOINT} (did it finish?); pass a checkpoint file instead")
    return best


def _load_checkpoint(path: Path, device: str) -> Predictor:
    from src.common.checkpoint import file_sha256, load_checkpoint
    from src.inference import provenance
    from src.inference.backends import TorchBackend

    ckpt = load_checkpoint(path)
    task, where = ckpt["task"], f"checkpoint {path}"
    if task not in TASKS:
        raise UserError(f"{where} is a {task!r} model; street-scene predicts {' and '.join(TASKS)} models")
    if task == "detection":
        from src.inference import detection
        from src.tasks.detection.model_yaml import check_model_spec

        spec = check_model_spec(ckpt["model_spec"], where)
        module = detection.build_torch_module(spec, ckpt["model_state"], where)
        imgsz = (int(spec["imgsz"]), int(spec["imgsz"]))
        pre = detection.preprocessing(imgsz)
    else:
        from src.inference import segmentation
        from src.tasks.segmentation.task import check_model_spec

        spec = check_model_spec(ckpt["model_spec"], where)
        module = segmentation.build_torch_module(spec, ckpt["model_state"], where)
        imgsz, pre = None, segmentation.preprocessing(spec)
    return Predictor(task=task, subtask=ckpt["subtask"], class_names=[str(n) for n in spec["names"]],
                     provenance=provenance.from_checkpoint(ckpt, path, file_sha256(path)),
                     backend=TorchBackend(module, device), imgsz=imgsz, preprocessing=pre,
                     model_spec=spec, model_state=ckpt["model_state"], config=ckpt["config"],
                     data_record=(ckpt["metadata"] or {}).get("data"))


def _load_onnx(path: Path) -> Predictor:
    from src.common.checkpoint import file_sha256
    from src.inference import provenance
    from src.inference.backends import OnnxBackend, require_onnxruntime

    require_onnxruntime(f"predicting with {path}")
    backend = OnnxBackend(path)
    fields = provenance.from_props(backend.metadata(), f"ONNX model {path}")
    if fields is None:
        raise UserError(f"ONNX model {path} carries no street-scene metadata (class names, preprocessing); "
                        "predict with ONNX files written by street-scene export")
    if fields["task"] not in TASKS or not isinstance(fields["class_names"], list):
        raise UserError(f"ONNX model {path}: metadata task {fields['task']!r} or class names are not usable")
    prov = {**{k: fields[k] for k in ("run_id", "config_hash", "checkpoint_sha256", "task", "subtask",
                                      "dataset_fingerprints", "version")},
            "checkpoint": str(path), "onnx_sha256": file_sha256(path)}
    imgsz = tuple(fields["imgsz"]) if fields["imgsz"] else None
    return Predictor(task=fields["task"], subtask=fields["subtask"],
                     class_names=[str(n) for n in fields["class_names"]],
                     provenance=prov, backend=backend, imgsz=imgsz, preprocessing=fields["preprocessing"])
