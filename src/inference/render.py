"""Pictures of predictions: class-id masks, colour overlays, boxes drawn on images; written atomically."""

from functools import lru_cache
from pathlib import Path

from src.common.atomic import atomic_write_bytes

OVERLAY_ALPHA = 0.5


@lru_cache(maxsize=None)
def palette():
    """256 fixed, well-separated colours (the VOC bit-interleaving scheme); class 0 is black."""
    import numpy as np

    colours = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours[i] = (r, g, b)
    return colours


def overlay(image, mask):
    import numpy as np

    blend = image.astype(np.float32) * (1 - OVERLAY_ALPHA) + palette()[mask].astype(np.float32) * OVERLAY_ALPHA
    return blend.round().clip(0, 255).astype(np.uint8)


def draw_boxes(image, detections):
    import cv2
    import numpy as np

    canvas = np.ascontiguousarray(image.copy())
    for det in detections:
        x1, y1, x2, y2 = (int(round(v)) for v in det["box_xyxy"])
        colour = tuple(int(v) for v in palette()[det["class_id"] + 1])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 1)
        cv2.putText(canvas, f"{det['class_name']} {det['confidence']:.2f}", (x1, max(y1 - 2, 8)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour, 1, cv2.LINE_AA)
    return canvas


def write_png(path: Path, array, root: Path) -> str:
    """A PNG (uint8 mask as greyscale class ids, RGB image as colour); returns the path relative to `root`."""
    return _write(path, array, ".png", root)


def write_jpg(path: Path, array, root: Path) -> str:
    return _write(path, array, ".jpg", root)


def _write(path: Path, array, ext: str, root: Path) -> str:
    import cv2

    data = array if array.ndim == 2 else array[..., ::-1]  # cv2 encodes BGR
    ok, encoded = cv2.imencode(ext, data)
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)  # a sub-folder of the output folder being built
    atomic_write_bytes(path, encoded.tobytes())
    return str(path.relative_to(root))
