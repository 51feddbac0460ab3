"""One writer per export format: write the file at `path`, return (runtime name, `batch -> output` over it).

The returned runtime loads the written file itself, so the parity check tests the file, not the module in memory.
"""

import json
from pathlib import Path
from typing import Callable, Dict, Tuple


def write_onnx(predictor, path: Path, size, dynamic: bool, props: Dict[str, str]) -> Tuple[str, Callable]:
    import onnx
    import torch

    from src.inference.backends import OnnxBackend
    from src.inference.export import OPSET, export_module, ultralytics_metadata

    module = export_module(predictor, "onnx", dynamic)
    out_name = "output0" if predictor.task == "detection" else "logits"
    axes = None
    if dynamic:
        axes = {"images": {0: "batch", 2: "height", 3: "width"},
                out_name: {0: "batch", 2: "anchors"} if predictor.task == "detection"
                else {0: "batch", 2: "height", 3: "width"}}
    example = torch.zeros(1, 3, *size)
    with torch.inference_mode():
        torch.onnx.export(module, example, str(path), opset_version=OPSET, input_names=["images"],
                          output_names=[out_name], dynamic_axes=axes, dynamo=False)
    model = onnx.load(str(path))
    meta = dict(props)
    if predictor.task == "detection":
        meta.update(ultralytics_metadata(predictor, size, dynamic))
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return "onnxruntime", OnnxBackend(path)


def write_torchscript(predictor, path: Path, size, dynamic: bool, props: Dict[str, str]) -> Tuple[str, Callable]:
    import torch

    from src.inference.backends import TorchBackend
    from src.inference.export import export_module, ultralytics_metadata

    module = export_module(predictor, "torchscript", dynamic)
    with torch.inference_mode():
        traced = torch.jit.trace(module, torch.zeros(1, 3, *size), strict=False, check_trace=False)  # parity checks it
    extra = {"street_scene.json": json.dumps(props, sort_keys=True)}
    if predictor.task == "detection":  # ultralytics reads a TorchScript model's metadata from config.txt
        meta = ultralytics_metadata(predictor, size, dynamic)
        extra["config.txt"] = json.dumps({**meta, "stride": 32, "batch": 1, "imgsz": list(size),
                                          "names": dict(enumerate(predictor.class_names))})
    torch.jit.save(traced, str(path), _extra_files=extra)
    return "torchscript", TorchBackend(torch.jit.load(str(path), map_location="cpu"))


def write_ultralytics(predictor, path: Path, size, dynamic: bool, props: Dict[str, str]) -> Tuple[str, Callable]:
    """A checkpoint dict in ultralytics' own layout (a pickled DetectionModel: the format YOLO() loads), with our
    provenance under `street_scene`. Read back for the parity check with ultralytics' weights-only loader."""
    import torch
    import ultralytics
    from ultralytics.nn.tasks import torch_safe_load

    from src.common.atomic import atomic_write_with
    from src.inference.backends import TorchBackend
    from src.tasks.detection.weights import build_model

    module = build_model(predictor.model_spec, predictor.model_state, "checkpoint").model
    module.args = {"task": "detect", "imgsz": int(size[0]), "single_cls": False}
    for p in module.parameters():
        p.requires_grad = False
    fields = {key.split(".", 1)[1]: json.loads(value) for key, value in props.items()}
    ckpt = {"date": fields.get("created_at") or _now(), "version": ultralytics.__version__,
            "license": "AGPL-3.0 License (https://ultralytics.com/license)", "docs": "https://docs.ultralytics.com",
            "epoch": -1, "best_fitness": None, "model": module, "ema": None, "updates": None, "optimizer": None,
            "train_args": {"task": "detect", "imgsz": int(size[0]), "single_cls": False},
            "street_scene": fields}
    atomic_write_with(path, lambda f: torch.save(ckpt, f), "wb")
    loaded, _ = torch_safe_load(str(path), safe_only=True)  # an allow-list of ultralytics classes, no code
    reread = loaded["model"].float().fuse(verbose=False).eval()
    return "ultralytics .pt", TorchBackend(reread)


def _now() -> str:
    from datetime import datetime

    return datetime.now().astimezone().isoformat()


WRITERS = {"onnx": write_onnx, "torchscript": write_torchscript, "ultralytics": write_ultralytics}
