"""Runtimes behind a Predictor: a torch module or an onnxruntime session, both `float32 NCHW array -> array`.

Pre- and post-processing live outside the backend, so the same code serves a checkpoint and its ONNX export.
"""

from pathlib import Path
from typing import Optional, Tuple

from src.common.errors import UserError


class TorchBackend:
    """A torch module in eval mode; a tuple output (ultralytics' `(y, raw)` in eval) gives its first element."""

    kind = "torch"

    def __init__(self, module, device: str = "cpu"):
        self.module = module.to(device).eval()
        self.device = device
        self.input_hw: Optional[Tuple[int, int]] = None  # any size

    def __call__(self, batch):
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(batch).to(self.device))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.float().cpu().numpy()


class OnnxBackend:
    """An onnxruntime CPU session over a file; `input_hw` is the fixed input size, None when it is dynamic."""

    kind = "onnx"

    def __init__(self, path: Path, threads: Optional[int] = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for bad files; one clear line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise UserError(f"cannot load ONNX model {path}: {first}; export it again with street-scene export")
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        h, w = inp.shape[2], inp.shape[3]
        self.input_hw = (h, w) if isinstance(h, int) and isinstance(w, int) else None

    def __call__(self, batch):
        return self.session.run(None, {self.input_name: batch})[0]

    def metadata(self) -> dict:
        return dict(self.session.get_modelmeta().custom_metadata_map)


def onnx_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def require_onnxruntime(what: str) -> None:
    if not onnx_available():
        raise UserError(f"{what} needs onnxruntime, which is not installed; install the export extra: "
                        "pip install -c requirements.lock -e '.[export]'")
