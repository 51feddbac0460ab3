"""The MLflow pyfunc model a `sync mlflow --register-model` version holds: street-scene's predictor behind
`mlflow.pyfunc.load_model(uri).predict(images)`.

Input (one of):
  - one image: a numpy HxWx3 uint8 RGB array;
  - a list of such arrays (sizes may differ);
  - a pandas DataFrame with an `image` column: encoded image bytes (PNG/JPEG, what `mlflow models serve` gets
    as base64) or image file paths.
Output: one record per image, as `street-scene predict` writes them (src/inference/predictor.py):
  detection {"image", "width", "height", "detections": [{"class_id", "class_name", "confidence", "box_xyxy"}]};
  segmentation {"image", "width", "height", "mask": HxW uint8 class ids, "class_fractions": {class: fraction}}.
`params` may hold `conf`, `iou`, `imgsz`. The weights are the run's checkpoint; load with
`model_config={"weights": "onnx"}` to run the exported ONNX (onnxruntime) when the version has one.

mlflow is imported at the top: this module is loaded only by MLflow (through pyfunc_entry.py) and by the sync.
"""

import io
from typing import Any, Dict, List, Optional

from mlflow.pyfunc import PythonModel

WEIGHTS = ("checkpoint", "onnx")  # model_config["weights"]: which artifact the predictor runs
PARAMS = ("conf", "iou", "imgsz")


class StreetSceneModel(PythonModel):
    # MLflow would wrap predict() to validate its input against a type hint, and warn when there is none; this
    # model takes three input forms (above), checked by to_images(), so that validation is switched off.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from src.inference.predictor import load_predictor

        weights = (context.model_config or {}).get("weights", "checkpoint")
        if weights not in WEIGHTS or weights not in context.artifacts:
            have = ", ".join(sorted(context.artifacts))
            raise ValueError(f"model_config weights={weights!r}: this model version holds {have}; "
                             f"use one of them")
        self.predictor = load_predictor(context.artifacts[weights])

    def predict(self, context, model_input, params: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
        params = dict(params or {})
        unknown = sorted(set(params) - set(PARAMS))
        if unknown:
            raise ValueError(f"unknown predict param {unknown[0]!r}; known: {', '.join(PARAMS)}")
        images, names = to_images(model_input)
        return self.predictor.predict_arrays(images, names=names, **params)


def to_images(model_input: Any):
    """(list of HxWx3 uint8 RGB arrays, their labels) from any accepted input form."""
    import numpy as np

    if isinstance(model_input, np.ndarray):
        return [model_input], None
    if isinstance(model_input, (list, tuple)):
        return list(model_input), None
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if "image" not in model_input.columns:
            raise ValueError(f"a DataFrame input needs an `image` column (encoded bytes or a file path); "
                             f"got columns {list(model_input.columns)}")
        cells = list(model_input["image"])
        return [decode_image(cell, i) for i, cell in enumerate(cells)], [_label(c, i) for i, c in enumerate(cells)]
    raise TypeError(f"expected an HxWx3 uint8 array, a list of them or a DataFrame with an `image` column, "
                    f"got {type(model_input).__name__}")


def decode_image(cell: Any, index: int):
    """Encoded image bytes or an image file path -> HxWx3 uint8 RGB array."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    source = io.BytesIO(bytes(cell)) if isinstance(cell, (bytes, bytearray, memoryview)) else cell
    if not isinstance(source, (io.BytesIO, str)):
        raise TypeError(f"image row {index}: expected bytes or a file path, got {type(cell).__name__}")
    try:
        with Image.open(source) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise ValueError(f"image row {index}: not a readable image ({exc})") from None


def _label(cell: Any, index: int) -> str:
    return cell if isinstance(cell, str) else str(index)
