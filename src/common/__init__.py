"""Shared reproducibility core: config, run directories, metadata, checkpoints, registry."""
