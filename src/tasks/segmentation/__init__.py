"""Semantic segmentation of road scenes: torchvision models trained by our own deterministic loop.

Modules (each imports torch lazily, inside its functions):
- models.py       build_model(): torchvision segmentation zoo, no downloads, optional local weights
- transforms.py   per-sample seeded augmentation (scale, flip, crop) and ImageNet normalisation
- dataset.py      SegmentationDataset over (image, mask) path pairs, seeded samplers and loaders
- metrics.py      mIoU / per-class IoU / pixel accuracy via torchmetrics
- state.py        RNG capture/restore, weights_only-safe copies of optimizer/scheduler state
- engine.py       train_segmentation(), evaluate_segmentation()
- schema.py       the segmentation config sections (architectures, optimizers, schedulers)
- task.py         the task contract: config -> data -> engine -> run directory
- progress.py     the per-epoch progress bar
"""
