"""Segmentation pre/post-processing. The model module embeds its normalisation (ImageNet mean/std unless the
checkpoint records others), so a backend takes plain RGB pixels 0-255 and exports carry their preprocessing."""

from functools import lru_cache
from typing import Any, Dict, List, Optional, Tuple

from src.tasks.segmentation.transforms import IMAGENET_MEAN, IMAGENET_STD


def preprocessing(model_spec: dict, input_hw: Optional[Tuple[int, int]] = None) -> Dict[str, Any]:
    """The checkpoint's recorded preprocessing; checkpoints written before it was recorded used ImageNet's."""
    recorded = model_spec.get("preprocessing") or {}
    out = {"color": "RGB", "layout": "NCHW", "dtype": "float32", "input_range": [0, 255],
           "scale": recorded.get("scale", 1 / 255), "mean": list(recorded.get("mean", IMAGENET_MEAN)),
           "std": list(recorded.get("std", IMAGENET_STD)), "normalization_embedded": True,
           "postprocess": "bilinear resize of logits (N, classes, H, W) to the image, argmax over classes"}
    if input_hw is not None:
        out["imgsz"] = list(input_hw)
    return out


@lru_cache(maxsize=None)
def _embedded_class():
    import torch
    import torch.nn as nn

    class NormalizedSegmenter(nn.Module):
        """RGB 0-255 (N, 3, H, W) -> logits (N, C, H, W); scale, mean and std are buffers of the graph."""

        def __init__(self, net, scale: float, mean, std):
            super().__init__()
            self.net = net
            self.register_buffer("scale", torch.tensor(float(scale)))
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, x):
            return self.net((x * self.scale - self.mean) / self.std)

    return NormalizedSegmenter


def build_torch_module(model_spec: dict, model_state: dict, where: str):
    from src.common.errors import UserError
    from src.tasks.segmentation.models import build_model

    net = build_model(model_spec["architecture"], int(model_spec["num_classes"]), None)
    try:
        net.load_state_dict(model_state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{where}: weights do not fit its model_spec ({model_spec['architecture']}): "
                        f"{str(exc).splitlines()[0]}") from None
    pre = preprocessing(model_spec)
    return _embedded_class()(net, pre["scale"], pre["mean"], pre["std"]).eval()


def to_batch(image, size_hw: Optional[Tuple[int, int]]):
    """(1, 3, h, w) float32 0-255, resized (bilinear, antialiased as in training) when `size_hw` differs."""
    import numpy as np
    import torch

    tensor = torch.from_numpy(np.array(image, copy=not image.flags.writeable)).permute(2, 0, 1)
    if size_hw is not None and tuple(size_hw) != tuple(image.shape[:2]):
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        tensor = F.resize(tensor, list(size_hw), interpolation=InterpolationMode.BILINEAR, antialias=True)
    return tensor[None].float().numpy()


def predict_one(backend, image, names: List[str], size_hw: Optional[Tuple[int, int]]) -> Dict[str, Any]:
    """{"mask": HxW uint8 class ids, "class_fractions": {name: fraction of pixels}} at the image's own size."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    logits = torch.from_numpy(backend(to_batch(image, backend.input_hw or size_hw)))
    if tuple(logits.shape[2:]) != tuple(image.shape[:2]):
        logits = F.interpolate(logits, size=tuple(image.shape[:2]), mode="bilinear", align_corners=False)
    mask = logits.argmax(1)[0].numpy().astype(np.uint8)
    counts = np.bincount(mask.ravel(), minlength=len(names))[:len(names)]
    return {"mask": mask, "class_fractions": {n: float(c) / mask.size for n, c in zip(names, counts.tolist())}}
