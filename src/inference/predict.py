"""`predict_source`: a model over an image, folder, .txt list or video, into one output folder.

The folder is built under a temporary name beside the target and renamed into place at the end: a failure
(an unreadable image halfway through a folder) leaves nothing behind, and an existing folder is replaced only
with `force`. It holds `predictions.json` (the records), `provenance.json` (which model, which source, which
settings) and, for segmentation, `masks/*.png` (class ids) and `overlays/*.png`; for detection with
`save_images`, `images/*.jpg` with the boxes drawn.
"""

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional

from src.common.atomic import atomic_write_text
from src.common.errors import UserError

PREDICTIONS_FILE = "predictions.json"
PROVENANCE_FILE = "provenance.json"
DEFAULT_ROOT = "predictions"


@dataclass
class PredictRequest:
    checkpoint: str  # best_model.pth, run id or exported .onnx
    source: str
    out: Optional[Path] = None  # default predictions/<stamp>_<run id or model name>
    conf: Optional[float] = None
    iou: Optional[float] = None
    imgsz: Optional[int] = None
    save_images: bool = False
    force: bool = False
    task: Optional[str] = None  # require a model of this task


def predict_source(request: PredictRequest) -> Dict[str, Any]:
    """{"records": [...], "out_dir": Path}; records hold relative file names instead of mask arrays."""
    from src.inference.predictor import load_predictor
    from src.inference.sources import iter_images, resolve_source

    _check_thresholds(request)
    source = resolve_source(request.source)
    if request.out is not None:
        _check_out(Path(request.out), request.force)
    predictor = load_predictor(request.checkpoint, task=request.task)
    predictor.input_size(request.imgsz)  # a bad --imgsz fails before anything is written
    out = Path(request.out) if request.out is not None else _default_out(predictor)
    _check_out(out, request.force)
    work = out.parent / f".{out.name}.partial-{os.getpid()}"
    work.mkdir()
    try:
        records = []
        used = set()
        reader = "cv2" if predictor.task == "detection" else "pil"
        for label, frame, image in iter_images(source, reader):
            record = predictor.predict_one(image, label, request.conf, request.iou, request.imgsz)
            if frame is not None:
                record = {"image": label, "frame": frame, **{k: v for k, v in record.items() if k != "image"}}
            stem = _unique_stem(Path(label).stem if frame is None else f"{Path(label).stem}_{frame:06d}", used)
            records.append(_write_files(work, stem, image, record, predictor, request.save_images))
        atomic_write_text(work / PREDICTIONS_FILE, json.dumps(records, indent=2) + "\n")
        atomic_write_text(work / PROVENANCE_FILE, json.dumps(_provenance(predictor, request, source, records),
                                                              indent=2, default=str) + "\n")
        _move_into_place(work, out, request.force)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"records": records, "out_dir": out, "predictor": predictor}


def _check_thresholds(request: PredictRequest) -> None:
    for name in ("conf", "iou"):
        value = getattr(request, name)
        if value is not None and not 0.0 <= float(value) <= 1.0:
            raise UserError(f"--{name} {value} must be between 0 and 1")


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise UserError(f"output folder {out} already exists; choose another --out or pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder path")
    if not out.parent.is_dir():
        raise UserError(f"the folder of --out {out} does not exist; create {out.parent} first")


def _default_out(predictor) -> Path:
    root = Path(DEFAULT_ROOT).resolve()
    root.mkdir(exist_ok=True)
    name = predictor.provenance.get("run_id") or Path(str(predictor.provenance.get("checkpoint"))).stem
    return root / f"{datetime.now().strftime('%Y%m%d_%H%M%S_%f')}_{name}"


def _unique_stem(stem: str, used: set) -> str:
    candidate, n = stem, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}-{n}"
    used.add(candidate)
    return candidate


def _write_files(work: Path, stem: str, image, record: Dict[str, Any], predictor, save_images: bool):
    from src.inference import render

    if predictor.task == "segmentation":
        mask = record.pop("mask")
        record["mask"] = render.write_png(work / "masks" / f"{stem}.png", mask, work)
        record["overlay"] = render.write_png(work / "overlays" / f"{stem}.png", render.overlay(image, mask), work)
    elif save_images:
        record["rendered"] = render.write_jpg(work / "images" / f"{stem}.jpg",
                                              render.draw_boxes(image, record["detections"]), work)
    return record


def _provenance(predictor, request: PredictRequest, source, records: List[dict]) -> Dict[str, Any]:
    return {"model": predictor.provenance, "model_format": predictor.format, "task": predictor.task,
            "subtask": predictor.subtask, "class_names": predictor.class_names,
            "source": {"kind": source.kind, "path": str(source.path.resolve())}, "images": len(records),
            "settings": {"conf": request.conf, "iou": request.iou, "imgsz": request.imgsz},
            "preprocessing": predictor.preprocessing, "created_at": datetime.now().isoformat(timespec="seconds")}


def _move_into_place(work: Path, out: Path, force: bool) -> None:
    if not out.exists():
        os.rename(work, out)
        return
    if not force:  # appeared while predicting
        raise UserError(f"output folder {out} appeared while predicting; pass --force to replace it")
    old = out.parent / f".{out.name}.replaced-{os.getpid()}"
    os.rename(out, old)
    os.rename(work, out)
    shutil.rmtree(old, ignore_errors=True)
