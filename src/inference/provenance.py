"""Where a model came from: built from a checkpoint, carried in exported files, read back without eval.

Exported files carry it as flat string key/value pairs (ONNX `metadata_props`, TorchScript `_extra_files`):
`street_scene.<field>`, each value JSON. Readers parse JSON only; nothing from a file is evaluated.
"""

import json
from pathlib import Path
from typing import Any, Dict, Optional

PREFIX = "street_scene."
# Fields every exported file carries (values JSON-encoded under PREFIX + field).
FIELDS = ("run_id", "config_hash", "checkpoint_sha256", "task", "subtask", "class_names", "imgsz",
          "preprocessing", "dataset_fingerprints", "version")


def street_scene_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("street-scene")
    except metadata.PackageNotFoundError:
        return "unknown"


def from_checkpoint(ckpt: Dict[str, Any], path: Path, sha256: str) -> Dict[str, Any]:
    meta = ckpt.get("metadata") or {}
    run_id = meta.get("run_id")
    return {"run_id": run_id, "config_hash": ckpt.get("config_hash"), "checkpoint_sha256": sha256,
            "checkpoint": str(Path(path).resolve()), "task": ckpt.get("task"), "subtask": ckpt.get("subtask"),
            "epoch": ckpt.get("epoch"), "dataset_fingerprints": meta.get("dataset_fingerprints"),
            "version": street_scene_version()}


def to_props(provenance: Dict[str, Any], class_names, imgsz, preprocessing: Dict[str, Any]) -> Dict[str, str]:
    values = {**{k: provenance.get(k) for k in FIELDS}, "class_names": list(class_names),
              "imgsz": list(imgsz) if imgsz is not None else None, "preprocessing": preprocessing,
              "version": street_scene_version()}
    return {PREFIX + k: json.dumps(values[k], sort_keys=True, default=str) for k in FIELDS}


def from_props(props: Dict[str, str], where: str) -> Optional[Dict[str, Any]]:
    """The fields back from key/value pairs; None when the file carries no street-scene provenance."""
    from src.common.errors import UserError

    if not any(k.startswith(PREFIX) for k in props):
        return None
    out = {}
    for field in FIELDS:
        raw = props.get(PREFIX + field)
        if raw is None:
            raise UserError(f"{where} lacks {PREFIX}{field} in its metadata; export it again with street-scene export")
        try:
            out[field] = json.loads(raw)
        except ValueError:
            raise UserError(f"{where}: metadata {PREFIX}{field} is not valid JSON; the file is damaged") from None
    return out
