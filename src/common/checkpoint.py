"""The checkpoint format every task shares.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(..., weights_only=True)`: opening a checkpoint can never run code. See docs/ARCHITECTURE.md.
"""

import hashlib
import io
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

from src.common.atomic import atomic_write_with
from src.common.errors import UserError

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "task", "subtask", "model_state", "model_spec", "epoch", "metrics", "config",
                 "config_hash", "metadata")


def build_checkpoint(*, task: str, subtask: str, model_state: Dict[str, Any], model_spec: Dict[str, Any],
                     epoch: int, metrics: Dict[str, Any], config: Dict[str, Any], config_hash: str,
                     metadata: Dict[str, Any], train_state: Optional[Dict[str, Any]] = None,
                     final: bool = False) -> Dict[str, Any]:
    ckpt = {
        "format_version": FORMAT_VERSION,
        "task": task,
        "subtask": subtask,
        "model_state": to_fp32_cpu(model_state),
        "model_spec": model_spec,
        "epoch": int(epoch),
        "metrics": metrics,
        "config": config,
        "config_hash": config_hash,
        "metadata": metadata,
        "final": bool(final),  # the run's last epoch: `street-scene runs finalize` knows training completed
    }
    if train_state is not None:
        ckpt["train_state"] = train_state
    return ckpt


def to_fp32_cpu(state: Dict[str, Any]) -> Dict[str, Any]:
    """Detached CPU copies; floating tensors as fp32 (ultralytics keeps its EMA in fp16 on disk)."""
    out = {}
    for name, tensor in state.items():
        t = tensor.detach().to("cpu")
        out[name] = t.float().clone() if t.is_floating_point() else t.clone()
    return out


def save_checkpoint(path: Path, ckpt: Dict[str, Any]) -> Path:
    """Write atomically; refuse (before writing) anything that would not load with weights_only=True."""
    import torch

    _check_weights_only(path, ckpt)
    # streamed into the temp file: no second in-memory copy of the weights (large models)
    atomic_write_with(path, lambda f: torch.save(ckpt, f), "wb")
    return Path(path)


def _check_weights_only(path: Path, ckpt: Dict[str, Any]) -> None:
    # The model state is a flat name -> tensor dict (checked directly); everything else is round-tripped
    # through the weights-only unpickler, which costs little next to re-reading every weight.
    import torch

    state = ckpt.get("model_state", {})
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TypeError(f"checkpoint for {path}: model_state must map names to tensors")
    rest = {k: v for k, v in ckpt.items() if k != "model_state"}
    buf = io.BytesIO()
    torch.save(rest, buf)
    try:
        torch.load(io.BytesIO(buf.getvalue()), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised as a programming error with the cause attached
        raise TypeError(f"checkpoint for {path} holds objects that weights_only loading rejects: {exc}") from exc


def load_checkpoint(path: Path, allow_legacy: bool = False) -> Dict[str, Any]:
    """Load and validate a street-scene checkpoint. Legacy (pickled) files only with `allow_legacy`."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; check --checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files; each becomes one clear line
        return _load_unsafe(path, exc, allow_legacy)
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        if allow_legacy:
            return _legacy(path, ckpt)
        raise UserError(f"{path} is not a street-scene checkpoint (no format_version); pass "
                        "--allow-legacy-checkpoint to load it without verification")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise UserError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise UserError(f"checkpoint {path} has format version {ckpt['format_version']!r}, this street-scene "
                        f"reads version {FORMAT_VERSION}; use the street-scene version that wrote it")
    _check_structure(path, ckpt)
    return ckpt


# The type every shared field must have; each task checks the inside of its own model_spec.
_FIELD_TYPES = {"task": str, "subtask": str, "model_state": dict, "model_spec": dict, "epoch": int, "metrics": dict,
                "config": dict, "config_hash": str, "metadata": dict}


def _check_structure(path: Path, ckpt: Dict[str, Any]) -> None:
    """A damaged checkpoint is one clear line here, not a TypeError deep inside a task."""
    import torch

    for key, kind in _FIELD_TYPES.items():
        if not isinstance(ckpt[key], kind) or isinstance(ckpt[key], bool):
            raise UserError(f"checkpoint {path} is damaged: {key} must be a {kind.__name__}, found "
                            f"{type(ckpt[key]).__name__}")
    bad = [k for k, v in ckpt["model_state"].items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"checkpoint {path} is damaged: model_state entry {bad[0]!r} is not a named tensor")
    if "train_state" in ckpt and not isinstance(ckpt["train_state"], dict):
        raise UserError(f"checkpoint {path} is damaged: train_state must be a dict")


def _load_unsafe(path: Path, exc: Exception, allow_legacy: bool) -> Dict[str, Any]:
    text = str(exc)
    needs_code = "Unsupported global" in text or "weights_only" in text and "GLOBAL" in text
    if not needs_code:
        raise UserError(f"cannot read checkpoint {path}: corrupt, truncated or not a torch file ({_reason(exc)})")
    if not allow_legacy:
        raise UserError(f"checkpoint {path} needs unpickling of Python code (a legacy or foreign file); "
                        "pass --allow-legacy-checkpoint only if you trust its source")
    warnings.warn(f"loading legacy checkpoint {path}: this unpickles code and skips config verification",
                  stacklevel=3)
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc2:  # noqa: BLE001
        raise UserError(f"cannot load legacy checkpoint {path}: {_reason(exc2)} (it may need code that is not "
                        "importable here)") from None
    return _legacy(path, ckpt)


def _reason(exc: Exception) -> str:
    """The informative line of a torch.load error (its weights-only wrapper text is the same every time)."""
    text = str(exc).split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def _legacy(path: Path, obj: Any) -> Dict[str, Any]:
    return {"format_version": 0, "legacy": True, "legacy_object": obj, "path": str(path)}


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def state_dict_sha256(state: Dict[str, Any]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, by name: equal iff the weights are equal.

    File bytes are not comparable across runs (metadata, timestamps); tensors are.
    """
    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
