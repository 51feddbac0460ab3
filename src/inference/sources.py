"""What `--source` names: an image, a folder of images, a `.txt` list of images, or a video file.

`resolve_source` checks the path and its kind before any model is loaded; `iter_images` yields
(label, frame index or None, HxWx3 uint8 RGB array) lazily and turns an unreadable file into a UserError.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from src.common.errors import UserError
from src.common.image_files import PILLOW_IMAGE_SUFFIXES, is_image

_SHOWN = ", ".join(f".{s}" for s in sorted(PILLOW_IMAGE_SUFFIXES))  # for messages
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm")


@dataclass(frozen=True)
class Source:
    kind: str  # image, folder, list, video
    path: Path
    items: Tuple[Path, ...]  # images (a video: the file itself)


def resolve_source(spec) -> Source:
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"source not found: {spec}; give an image, a folder of images, a .txt list or a video")
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.is_file() and is_image(p, PILLOW_IMAGE_SUFFIXES))
        if not images:
            raise UserError(f"source folder {path} holds no images ({_SHOWN})")
        return Source("folder", path, tuple(images))
    suffix = path.suffix.lower()
    if is_image(path, PILLOW_IMAGE_SUFFIXES):
        return Source("image", path, (path,))
    if suffix in VIDEO_SUFFIXES:
        return Source("video", path, (path,))
    if suffix == ".txt":
        return Source("list", path, tuple(_list_items(path)))
    raise UserError(f"source {path} has an unknown format {suffix or '(no suffix)'}; use an image "
                    f"({_SHOWN}), a folder, a .txt list or a video ({', '.join(VIDEO_SUFFIXES)})")


def _list_items(txt: Path) -> List[Path]:
    """Image paths one per line; relative ones are relative to the list's folder (as for training splits)."""
    try:
        lines = txt.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read image list {txt}: {exc}") from None
    items = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        item = Path(line).expanduser()
        item = item if item.is_absolute() else txt.parent / item
        if not item.is_file():
            raise UserError(f"{txt} line {number}: image {line} not found")
        if not is_image(item, PILLOW_IMAGE_SUFFIXES):
            raise UserError(f"{txt} line {number}: {line} is not an image ({_SHOWN})")
        items.append(item)
    if not items:
        raise UserError(f"image list {txt} names no images")
    return items


def iter_images(source: Source, reader: str = "cv2") -> Iterator[Tuple[str, Optional[int], object]]:
    """(label, frame, RGB array) per image or video frame. `reader` is cv2 (what ultralytics decodes with) or
    pil (what segmentation training decodes with)."""
    if source.kind == "video":
        yield from _video_frames(source.path)
        return
    for path in source.items:
        yield str(path), None, read_image(path, reader)


def read_image(path: Path, reader: str = "cv2"):
    import numpy as np

    if reader == "pil":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                return np.ascontiguousarray(np.asarray(img.convert("RGB")))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise UserError(f"cannot read image {path}: {exc}; check the file") from None
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise UserError(f"cannot read image {path}: not a decodable image (empty, truncated or another format)")
    return np.ascontiguousarray(image[..., ::-1])


def _video_frames(path: Path):
    import cv2
    import numpy as np

    capture = cv2.VideoCapture(str(path))
    try:
        ok, frame = capture.read() if capture.isOpened() else (False, None)
        if not ok:
            raise UserError(f"cannot read video {path}: no decodable frame (damaged file or unsupported codec)")
        index = 0
        while ok:
            yield str(path), index, np.ascontiguousarray(frame[..., ::-1])
            ok, frame = capture.read()
            index += 1
    finally:
        capture.release()
