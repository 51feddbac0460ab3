"""(image, mask) datasets and the seeded samplers/loaders that make the data order a function of (seed, epoch).

The sampler yields `(epoch, index)` keys, so the dataset derives each sample's augmentation generator from
(seed, epoch, index) inside whichever worker process loads it: no shared mutable epoch counter, no global RNG.
"""

from functools import partial
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

from src.common.errors import UserError
from src.common.seeding import seed_worker
from src.tasks.segmentation.transforms import EvalTransform, pad_collate, sample_generator

Item = Tuple[Path, Path]  # (image path, mask path)


def read_image(path: Path):
    """RGB uint8 tensor (3, H, W)."""
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def read_mask(path: Path):
    """int64 tensor (H, W) of class ids. Palette ('P') PNGs give their indices, as VOC/Cityscapes expect."""
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as img:
        array = np.asarray(img)
    if array.ndim != 2:
        raise UserError(f"mask {path} has shape {array.shape}; masks must be single-channel PNGs of class ids")
    return torch.from_numpy(array.astype(np.int64))


class SegmentationDataset:
    """Map-style dataset over (image_path, mask_path) pairs; key is an index or an (epoch, index) pair."""

    def __init__(self, items: Sequence[Item], transform: Callable, seed: int = 0):
        self.items = [(Path(img), Path(msk)) for img, msk in items]
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image_path, mask_path = self.items[index]
        image, mask = read_image(image_path), read_mask(mask_path)
        if image.shape[-2:] != mask.shape:
            raise UserError(f"image {image_path} is {tuple(image.shape[-2:])} but its mask {mask_path} is "
                            f"{tuple(mask.shape)}; image and mask must have the same height and width")
        return self.transform(image, mask, sample_generator(self.seed, epoch, index))


class EpochSampler:
    """Wraps a DistributedSampler (also used for one process) and tags each index with its epoch."""

    def __init__(self, dataset, seed: int, rank: int, world_size: int, epoch: int):
        from torch.utils.data import DistributedSampler

        # num_replicas/rank given explicitly: no process group is needed when world_size == 1. The sampler
        # shuffles with seed + epoch, so (seed 0, epoch 1) would repeat (seed 1, epoch 0): mix the seed first.
        mixed = derived_seed(seed, 0x5A3B) >> 2  # leaves room for "+ epoch" in a 64-bit generator seed
        self.inner = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=mixed)
        self.inner.set_epoch(epoch)
        self.epoch = epoch

    def __iter__(self):
        return ((self.epoch, index) for index in self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def derived_seed(*keys: int) -> int:
    """A well-mixed 64-bit seed from integers (NumPy's SeedSequence)."""
    import numpy as np

    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0])


def make_train_loader(dataset: SegmentationDataset, *, batch_size: int, seed: int, epoch: int, workers: int,
                      rank: int = 0, world_size: int = 1, pin_memory: bool = False):
    """The loader for one training epoch: order and augmentation depend only on (seed, epoch, rank, world_size)."""
    import torch
    from torch.utils.data import DataLoader

    ignore_index = dataset.transform.ignore_index
    return DataLoader(
        dataset, batch_size=batch_size, sampler=EpochSampler(dataset, seed, rank, world_size, epoch),
        num_workers=workers, collate_fn=partial(pad_collate, ignore_index=ignore_index),
        worker_init_fn=seed_worker, generator=torch.Generator().manual_seed(derived_seed(seed, epoch, 0x5EED)),
        pin_memory=pin_memory, drop_last=True,  # a batch of 1 breaks BatchNorm in pooled heads
    )


def make_eval_loader(items: Sequence[Item], *, batch_size: int, workers: int, ignore_index: int,
                     rank: int = 0, world_size: int = 1, pin_memory: bool = False,
                     transform: Optional[Callable] = None):
    """In-order loader over this rank's share (items rank, rank+world, ...): no padding, no duplicates."""
    import torch
    from torch.utils.data import DataLoader

    dataset = SegmentationDataset(items, transform or EvalTransform())
    return DataLoader(
        dataset, batch_size=batch_size, sampler=list(range(rank, len(dataset), world_size)),
        num_workers=workers, collate_fn=partial(pad_collate, ignore_index=ignore_index),
        worker_init_fn=seed_worker, generator=torch.Generator().manual_seed(0), pin_memory=pin_memory,
    )
