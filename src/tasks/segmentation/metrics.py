"""Segmentation metrics via torchmetrics: per-class IoU, mIoU, pixel accuracy (ignore index respected).

A class absent from both the predictions and the targets of the whole evaluation has no IoU (0/0): it is NaN in
`val/IoU_<name>` and left out of `val/mIoU`, which is the mean over classes that occur (torchmetrics' own
"macro" rule). A class that occurs only in the targets, or is only predicted, has IoU 0 and counts.
Under torch.distributed, torchmetrics sums the confusion states of all processes at compute().
"""

import math
from typing import Dict, Optional, Sequence


class SegmentationMetrics:
    """Accumulates over batches; `compute()` returns plain floats keyed `<prefix>mIoU` etc."""

    def __init__(self, num_classes: int, ignore_index: int, class_names: Optional[Sequence[str]] = None,
                 device="cpu"):
        from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

        self.names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
        if len(self.names) != num_classes:
            raise ValueError(f"{len(self.names)} class names for {num_classes} classes")
        self.iou = MulticlassJaccardIndex(num_classes=num_classes, average=None, ignore_index=ignore_index,
                                          zero_division="nan").to(device)
        self.accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro",
                                           ignore_index=ignore_index).to(device)

    def update(self, logits, target) -> None:
        """logits (N, C, H, W) or class ids (N, H, W); target (N, H, W) with ignore_index pixels."""
        preds = logits.argmax(1) if logits.dim() == 4 else logits
        self.iou.update(preds, target)
        self.accuracy.update(preds, target)

    def compute(self, prefix: str = "val/") -> Dict[str, float]:
        import warnings

        with warnings.catch_warnings():
            # A process whose share of a tiny val set is empty: its zero states are still summed correctly.
            warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
            per_class = [float(v) for v in self.iou.compute().cpu()]
            accuracy = float(self.accuracy.compute())
        present = [v for v in per_class if not math.isnan(v)]
        out = {f"{prefix}mIoU": sum(present) / len(present) if present else math.nan,
               f"{prefix}pixel_accuracy": accuracy}
        out.update({f"{prefix}IoU_{name}": value for name, value in zip(self.names, per_class)})
        return out

    def reset(self) -> None:
        self.iou.reset()
        self.accuracy.reset()
