"""What every format reader returns, and the checks the readers share: image listing, sizes, JSON, pairing."""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from src.common.errors import UserError


@dataclass(frozen=True)
class DetectionSample:
    stem: str  # the output image and label file name, without suffix
    image: Path  # the source image
    size: tuple[int, int]  # (width, height) in pixels
    boxes: tuple  # (source class name, x1, y1, x2, y2), pixels


@dataclass(frozen=True)
class SegmentationSample:
    stem: str
    image: Path
    mask: Path  # the source's label-id mask


@dataclass
class Source:
    samples: list  # DetectionSample or SegmentationSample, sorted by stem
    record: dict  # where the data came from (absolute paths), for conversion.yaml
    skipped: dict = field(default_factory=dict)  # reason -> count of annotations the reader left out


def list_images(folder: Path, suffixes, recursive: bool = False) -> list[Path]:
    """Image files (suffix in `suffixes`, lower case without dot) in `folder`; hidden files and folders skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        found += [Path(root, f) for f in files if not f.startswith(".") and f.rpartition(".")[2].lower() in suffixes]
    return sorted(found)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header; an unreadable image is a UserError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for damaged files; each is one clear line
        raise UserError(f"image {path} cannot be read ({type(exc).__name__}: {str(exc)[:120]}); replace or "
                        "remove it") from None


def read_json(path: Path, what: str):
    """Parse a JSON file; a missing, unreadable or malformed file is one UserError line."""
    if not path.exists():
        raise UserError(f"{what} {path} does not exist; check the path")
    if not path.is_file():
        raise UserError(f"{what} {path} is not a file; pass the JSON label file")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") \
            from None
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not valid JSON (not UTF-8 text); is it the right file?") from None


def require_folder(path: Path, what: str, hint: str) -> Path:
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise UserError(f"{what} {path} {state}; {hint}")
    return path


def check_pairs(images: set, labels: set, where: str, image_word: str, label_word: str) -> None:
    """Every image needs exactly one label and every label one image (keys are names without suffix)."""
    problems = _count_examples([(images - labels, f"{image_word}(s) without a {label_word}"),
                                (labels - images, f"{label_word}(s) without an {image_word}")])
    if problems:
        raise UserError(f"{where}: {problems}; every {image_word} needs exactly one {label_word} of the same name")


def _count_examples(groups) -> str:
    """'3 things (e.g. a, b, c) and 1 other (e.g. d)' for the non-empty groups of (names, what)."""
    return " and ".join(f"{len(names)} {what} (e.g. {', '.join(sorted(names)[:3])})" for names, what in groups
                        if names)


def check_listed_images(listed: list[str], folder: Path, suffixes, what: str) -> dict[str, Path]:
    """Match the image names a label file lists (relative paths) with the files in `folder`: each listed name
    must exist and every image in the folder must be listed. Returns {listed name: path}."""
    on_disk = {p.relative_to(folder).as_posix(): p for p in list_images(folder, suffixes, recursive=True)}
    problems = _count_examples([(set(listed) - on_disk.keys(), "labelled image(s) missing from the folder"),
                                (on_disk.keys() - set(listed), "image(s) in the folder without labels")])
    if problems:
        raise UserError(f"{what} and --images {folder} do not match: {problems}; pass the image folder of the same "
                        "split as the labels")
    return {name: on_disk[name] for name in listed}


def check_unique_stems(stems: list[str], where: str) -> None:
    seen = set()
    for stem in stems:
        if stem in seen:
            raise UserError(f"{where}: two images are named {stem!r} (without suffix and folder); the converted "
                            "dataset is flat, so image names must be unique")
        seen.add(stem)
