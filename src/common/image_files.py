"""Which file names are images: one list for every reader of data (fingerprints, detection and segmentation
splits, converters, predict sources), so a file counted by one is never skipped by another."""

from pathlib import PurePath
from typing import Union

# ultralytics.data.utils.IMG_FORMATS (8.4.190), copied so that resolving or fingerprinting data never imports
# ultralytics (and with it torch). Detection data may use any of them: ultralytics decodes them.
IMAGE_SUFFIXES = frozenset({"avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "tif", "tiff",
                            "webp"})
# What our own readers (Pillow, without plugins) decode: segmentation images and masks, predict sources.
PILLOW_IMAGE_SUFFIXES = frozenset({"bmp", "jpeg", "jpg", "png", "tif", "tiff", "webp"})


def suffix_of(name: Union[str, PurePath]) -> str:
    """Lower-case suffix without the dot ('' when there is none): 'a/B.JPG' -> 'jpg'."""
    base = str(name).replace("\\", "/").rpartition("/")[2]
    return base.rpartition(".")[2].lower() if "." in base else ""


def is_image(name: Union[str, PurePath], suffixes=IMAGE_SUFFIXES) -> bool:
    return suffix_of(name) in suffixes
