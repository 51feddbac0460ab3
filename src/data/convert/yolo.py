"""Pixel boxes to YOLO label lines (`class x_center y_center width height`, normalized), with the count of every
box kept, clipped or dropped and why."""

from collections import Counter
from dataclasses import dataclass, field

MIN_BOX_PX = 1.0  # narrower or shorter than a pixel after clipping: nothing a detector could learn from
DIGITS = 6  # 1e-6 of a 4096 px side is 0.004 px


@dataclass
class DetectionTally:
    images: int = 0
    objects: Counter = field(default_factory=Counter)  # our class -> boxes written
    unmapped: Counter = field(default_factory=Counter)  # source class -> boxes dropped (mapped to null or absent)
    clipped: int = 0  # boxes that reached outside the image, written clipped to it
    degenerate: int = 0  # boxes dropped: under MIN_BOX_PX wide or high after clipping (or wholly outside)

    def add(self, other: "DetectionTally") -> None:
        self.images += other.images
        self.objects.update(other.objects)
        self.unmapped.update(other.unmapped)
        self.clipped += other.clipped
        self.degenerate += other.degenerate

    def as_dict(self, classes: list[str], skipped: dict | None = None) -> dict:
        dropped = {"not_in_mapping": dict(sorted(self.unmapped.items())), "degenerate_box": self.degenerate,
                   **(skipped or {})}
        return {"images": self.images, "objects": {c: self.objects[c] for c in classes},
                "clipped_boxes": self.clipped, "dropped": dropped}


def label_text(sample, mapping: dict, class_ids: dict, tally: DetectionTally) -> str:
    """The YOLO label file of one sample (empty for an image without objects); counts go into `tally`."""
    width, height = sample.size
    lines = []
    tally.images += 1
    for name, x1, y1, x2, y2 in sample.boxes:
        target = mapping.get(name)
        if target is None:
            tally.unmapped[name] += 1
            continue
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
        if cx2 - cx1 < MIN_BOX_PX or cy2 - cy1 < MIN_BOX_PX:
            tally.degenerate += 1
            continue
        tally.clipped += (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2)
        tally.objects[target] += 1
        values = ((cx1 + cx2) / 2 / width, (cy1 + cy2) / 2 / height, (cx2 - cx1) / width, (cy2 - cy1) / height)
        lines.append(f"{class_ids[target]} " + " ".join(f"{v:.{DIGITS}f}" for v in values) + "\n")
    return "".join(lines)
