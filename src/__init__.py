"""street-scene: reproducible street-scene detection and segmentation."""
