"""Semantic segmentation of road scenes: torchvision models trained by our own deterministic loop.

Modules (each imports torch lazily, inside its functions):
- models.py       build_model(): torchvision segmentation zoo, no downloads, optional local weights
- transforms.py   per-sample seeded augmentation (scale, flip, crop) and ImageNet normalisation
- dataset.py      SegmentationDataset over (image, mask) path pairs, seeded samplers and loaders
- metrics.py      mIoU / per-class IoU / pixel accuracy via torchmetrics
- state.py        RNG capture/restore, weights_only-safe copies, state_dict_sha256()
- distributed.py  torchrun support (gloo on CPU, nccl on CUDA)
- engine.py       train_segmentation(), evaluate_segmentation()
"""
