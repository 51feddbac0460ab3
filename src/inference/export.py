"""`export_model`: a checkpoint as ONNX, TorchScript or an ultralytics `.pt`, carrying its provenance.

The file is written under a temporary name beside the target, compared with the checkpoint's torch model on
sample images (parity.py), and renamed into place only when it agrees (relative difference <= 1e-3); then it is
recorded in `<run dir>/exports.json`, under the run's lock when the run has one. Nothing is downloaded.
"""

import contextlib
import copy
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from src.common.errors import UserError

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript", "ultralytics": ".pt"}
OPSET = 17


class ExportMismatchError(UserError):
    """The exported model does not compute what the checkpoint computes; nothing was kept. Exit 1."""

    exit_code = 1


@dataclass
class ExportRequest:
    checkpoint: str  # best_model.pth or a run id
    format: str
    out: Optional[Path] = None  # default <run dir>/exports/<checkpoint stem>[-dynamic].<ext>
    imgsz: Optional[int] = None
    dynamic: bool = False
    force: bool = False


def export_model(request: ExportRequest) -> Dict[str, Any]:
    """The exports.json record of the new file (plus "table": the parity table as text)."""
    from src.inference.exports_record import record_export, run_dir_of
    from src.inference.predictor import resolve_model_path

    if request.format not in FORMATS:
        raise UserError(f"unknown export format {request.format!r}; choose one of {', '.join(FORMATS)}")
    ckpt_path = resolve_model_path(request.checkpoint)
    if ckpt_path.suffix.lower() == ".onnx":
        raise UserError(f"{ckpt_path} is already an export; export from the run's best_model.pth")
    run_dir = run_dir_of(ckpt_path)
    out = Path(request.out) if request.out else _default_out(ckpt_path, run_dir, request)
    _check_out(out, request.force, default=request.out is None)
    with _run_lock(run_dir):
        predictor = _load(ckpt_path, request.format)
        size = _export_size(predictor, request.imgsz)
        tmp = out.parent / f".{out.name}.partial-{os.getpid()}{out.suffix}"
        try:
            parity = _write_and_compare(predictor, request, size, tmp)
            if out.exists() and not request.force:
                raise UserError(f"{out} appeared while exporting; pass --force to replace it")
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        from src.common.checkpoint import file_sha256

        entry = {"format": request.format, "path": str(out.resolve()), "sha256": file_sha256(out),
                 "created_at": datetime.now().isoformat(timespec="seconds"), "imgsz": list(size),
                 "dynamic": bool(request.dynamic), "parity": parity["figures"], "parity_images": parity["images"],
                 "checkpoint": str(ckpt_path), "checkpoint_sha256": predictor.provenance["checkpoint_sha256"],
                 "run_id": predictor.provenance.get("run_id")}
        if run_dir is not None:
            record_export(run_dir, entry)
    return {**entry, "table": parity["table"], "recorded_in": str(run_dir) if run_dir else None}


def _default_out(ckpt_path: Path, run_dir: Optional[Path], request: ExportRequest) -> Path:
    folder = (run_dir or ckpt_path.parent) / "exports"
    return folder / f"{ckpt_path.stem}{'-dynamic' if request.dynamic else ''}{FORMATS[request.format]}"


def _check_out(out: Path, force: bool, default: bool) -> None:
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file path")
    if out.exists() and not force:
        raise UserError(f"{out} already exists; pass --force to replace it or choose another --out")
    if default:
        out.parent.mkdir(exist_ok=True)  # <run dir>/exports
    elif not out.parent.is_dir():
        raise UserError(f"the folder of --out {out} does not exist; create {out.parent} first")


@contextlib.contextmanager
def _run_lock(run_dir: Optional[Path]):
    from src.common.run_liveness import LOCK_FILE, held

    if run_dir is None or not (run_dir / LOCK_FILE).exists():
        yield
        return
    with held(run_dir, "given a new export record"):
        yield


def _load(ckpt_path: Path, fmt: str):
    from src.inference.predictor import load_predictor

    if fmt == "onnx":
        from src.inference.backends import require_onnxruntime

        require_onnxruntime("ONNX export (its parity check)")
    predictor = load_predictor(ckpt_path)
    if fmt == "ultralytics" and predictor.task != "detection":
        raise UserError(f"{ckpt_path} is a {predictor.task} model; the ultralytics format is for detection models "
                        "(use --format onnx or torchscript)")
    return predictor


def _export_size(predictor, imgsz: Optional[int]) -> Tuple[int, int]:
    if predictor.task == "detection":
        return predictor.input_size(imgsz)
    if imgsz is not None:
        if not isinstance(imgsz, int) or imgsz < 32:
            raise UserError(f"--imgsz {imgsz!r} must be an integer of at least 32")
        return (imgsz, imgsz)
    crop = predictor.config["segmentation"]["training"]["crop_size"]
    return (int(crop[0]), int(crop[1]))


def _write_and_compare(predictor, request: ExportRequest, size, tmp: Path) -> Dict[str, Any]:
    from src.inference import parity, provenance
    from src.inference.formats import WRITERS

    pre = _preprocessing(predictor, size)
    props = provenance.to_props(predictor.provenance, predictor.class_names, size, pre)
    runtime_name, runtime = WRITERS[request.format](predictor, tmp, size, request.dynamic, props)
    images, where = parity.sample_images(predictor.data_record,
                                         "cv2" if predictor.task == "detection" else "pil")
    batches = [_batch(predictor, image, size, request.dynamic) for image in images]
    try:
        figures = parity.compare(batches, predictor.backend, runtime)
    except ValueError as exc:
        raise ExportMismatchError(f"{request.format} export of {predictor.provenance['checkpoint']}: {exc}; "
                                  "nothing was written") from None
    text = parity.table(figures, runtime_name)
    if not figures["max_rel_diff"] <= parity.TOLERANCE:
        raise ExportMismatchError(f"{request.format} export differs from the checkpoint by {figures['max_rel_diff']:.3g} "
                                  f"(relative, limit {parity.TOLERANCE}) on {where}; nothing was written\n{text}")
    return {"figures": figures, "images": where, "table": text}


def _preprocessing(predictor, size) -> Dict[str, Any]:
    from src.inference import detection, segmentation

    if predictor.task == "detection":
        return detection.preprocessing(size)
    return segmentation.preprocessing(predictor.model_spec, size)


def _batch(predictor, image, size, dynamic: bool):
    from src.inference import detection, segmentation

    if predictor.task == "detection":
        return detection.letterbox(image, size, auto=dynamic)
    return segmentation.to_batch(image, None if dynamic else size)


def export_module(predictor, fmt: str, dynamic: bool):
    """A copy of the predictor's torch module in export mode (detection heads return one tensor)."""
    module = copy.deepcopy(predictor.backend.module).cpu().eval()
    if predictor.task == "detection":
        from ultralytics.nn.modules.head import Detect

        for m in module.modules():
            if isinstance(m, Detect):
                m.dynamic, m.export, m.format = dynamic, True, fmt
    return module


def ultralytics_metadata(predictor, size, dynamic: bool) -> Dict[str, str]:
    """The metadata keys ultralytics' AutoBackend reads from an exported detector."""
    return {"description": f"street-scene {predictor.subtask} detector", "author": "street-scene",
            "stride": "32", "task": "detect", "batch": "1", "channels": "3", "imgsz": json.dumps(list(size)),
            "names": repr({i: n for i, n in enumerate(predictor.class_names)}), "dynamic": str(bool(dynamic))}
