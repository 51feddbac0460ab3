"""Paired image/mask transforms whose randomness comes only from an explicit per-sample generator.

Every random draw is taken from `sample_generator(seed, epoch, index)`, never from a global RNG, so a sample's
augmentation is the same whichever DataLoader worker (or how many workers, or which resumed process) makes it.
"""

from dataclasses import dataclass
from typing import Tuple

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sample_generator(seed: int, epoch: int, index: int):
    """A torch.Generator seeded from (seed, epoch, index) through NumPy's SeedSequence (well-mixed, 64-bit)."""
    import numpy as np
    import torch

    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def normalize(image):
    """uint8 (3, H, W) -> float32 normalised with ImageNet mean/std (what torchvision backbones expect)."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image.float().div_(255.0) - mean) / std


@dataclass(frozen=True)
class TrainAugment:
    """Random scale -> random crop -> horizontal flip -> normalise -> pad (image 0, mask ignore_index)."""

    crop_size: Tuple[int, int]
    ignore_index: int
    scale_range: Tuple[float, float] = (0.5, 2.0)
    hflip_prob: float = 0.5

    def __call__(self, image, mask, generator):
        import torch
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        # Always draw the same four numbers in the same order, whatever branches are taken.
        u_scale, u_flip, u_top, u_left = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * u_scale
        h, w = mask.shape[-2:]
        size = [max(1, round(h * scale)), max(1, round(w * scale))]
        image = F.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        mask = F.resize(mask[None], size, interpolation=InterpolationMode.NEAREST_EXACT)[0]
        # Crop before flipping and normalising: only crop-sized work (a uniform offset then a flip has the
        # same distribution as a flip then a uniform offset).
        ch, cw = self.crop_size
        top = min(int(u_top * (max(size[0] - ch, 0) + 1)), max(size[0] - ch, 0))
        left = min(int(u_left * (max(size[1] - cw, 0) + 1)), max(size[1] - cw, 0))
        image, mask = image[:, top:top + ch, left:left + cw], mask[top:top + ch, left:left + cw]
        if u_flip < self.hflip_prob:
            image, mask = image.flip(-1), mask.flip(-1)
        return pad_to(normalize(image), mask, self.crop_size, self.ignore_index)


@dataclass(frozen=True)
class EvalTransform:
    """Full-resolution evaluation: normalise only (the metric sees every labelled pixel)."""

    def __call__(self, image, mask, generator=None):
        return normalize(image), mask.long()


def pad_to(image, mask, size: Tuple[int, int], ignore_index: int):
    """Pad bottom/right up to `size`: image with 0 (the mean colour once normalised), mask with ignore_index."""
    import torch.nn.functional as F

    pad_h = max(0, size[0] - image.shape[-2])
    pad_w = max(0, size[1] - image.shape[-1])
    if pad_h == 0 and pad_w == 0:
        return image, mask
    image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
    mask = F.pad(mask, (0, pad_w, 0, pad_h), value=ignore_index)
    return image, mask


def pad_collate(batch, ignore_index: int):
    """Stack (image, mask) pairs, padding smaller ones to the batch's largest size (masks with ignore_index)."""
    import torch

    height = max(img.shape[-2] for img, _ in batch)
    width = max(img.shape[-1] for img, _ in batch)
    padded = [pad_to(img, msk, (height, width), ignore_index) for img, msk in batch]
    return torch.stack([p[0] for p in padded]), torch.stack([p[1] for p in padded])
