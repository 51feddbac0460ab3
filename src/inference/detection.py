"""Detection pre/post-processing, exactly ultralytics' predict path: letterbox, /255, NMS, boxes scaled back.

ultralytics' predictor letterboxes one image with the least padding that keeps a multiple of the stride
(`auto=True`) when the model accepts any size (a torch model, a dynamic export), and to the full square
`imgsz` otherwise (a fixed-size export). We follow the same rule, so a checkpoint gives the detections of
`YOLO(...).predict(...)` and a dynamic ONNX export gives the checkpoint's.
"""

from typing import Any, Dict, List, Optional, Tuple

STRIDE = 32
PAD_VALUE = 114
DEFAULT_CONF = 0.25  # ultralytics' predict defaults
DEFAULT_IOU = 0.7
MAX_DET = 300


def preprocessing(imgsz: Tuple[int, int]) -> Dict[str, Any]:
    """What an exported detector expects, recorded in its metadata."""
    return {"color": "RGB", "layout": "NCHW", "dtype": "float32", "scale": 1 / 255, "resize": "letterbox",
            "pad_value": PAD_VALUE, "stride": STRIDE, "imgsz": list(imgsz),
            "postprocess": "ultralytics non_max_suppression on output0 (N, 4 + classes, anchors), xywh boxes"}


def build_torch_module(model_spec: dict, model_state: dict, where: str):
    """The fused DetectionModel ultralytics' AutoBackend would run (fusing changes numerics slightly)."""
    from src.tasks.detection.offline import configure_ultralytics, default_config_dir
    from src.tasks.detection.weights import build_model

    configure_ultralytics(default_config_dir())
    module = build_model(model_spec, model_state, where).model
    for p in module.parameters():
        p.requires_grad = False
    return module.float().fuse(verbose=False).eval()


def letterbox(image, imgsz: Tuple[int, int], auto: bool):
    """(1, 3, h, w) float32 in [0, 1] from an HxWx3 uint8 RGB array."""
    import numpy as np
    from ultralytics.data.augment import LetterBox

    boxed = LetterBox(imgsz, auto=auto, stride=STRIDE, padding_value=PAD_VALUE)(image=image)
    return np.ascontiguousarray(boxed.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


def predict_one(backend, image, names: List[str], imgsz: Tuple[int, int], conf: float, iou: float
                ) -> List[Dict[str, Any]]:
    """Detections for one image, boxes in its own pixels, highest confidence first."""
    batch = letterbox(image, backend.input_hw or imgsz, auto=backend.input_hw is None)
    return postprocess(backend(batch), batch.shape[2:], image.shape[:2], names, conf, iou)


def postprocess(output, input_hw, image_hw, names: List[str], conf: float, iou: float) -> List[Dict[str, Any]]:
    import torch
    from ultralytics.utils import nms, ops

    pred = nms.non_max_suppression(torch.from_numpy(output), conf, iou, max_det=MAX_DET)[0]
    pred[:, :4] = ops.scale_boxes(tuple(input_hw), pred[:, :4], tuple(image_hw))
    return [{"class_id": int(c), "class_name": names[int(c)], "confidence": float(s),
             "box_xyxy": [float(v) for v in box]}
            for *box, s, c in pred.tolist()]


def resolve_imgsz(imgsz: Optional[int], default: int) -> Tuple[int, int]:
    from src.common.errors import UserError

    size = default if imgsz is None else imgsz
    if not isinstance(size, int) or isinstance(size, bool) or size < STRIDE or size % STRIDE:
        raise UserError(f"--imgsz {size!r} must be a multiple of {STRIDE} of at least {STRIDE}")
    return (size, size)
