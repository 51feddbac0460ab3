"""Detection datasets: resolve what the user passed as --train-data / --val-data / --test-data, check it, and write
the effective ultralytics data yaml.

Three spellings of a split are accepted, all in YOLO label format:
  (a) a folder holding `images/` and `labels/` (what `street-scene make-dataset` writes),
  (b) an ultralytics-style `.../images/<split>` folder whose labels sit in `.../labels/<split>`,
  (c) a `.txt` file listing image paths, relative paths being relative to the `.txt` file's folder.
Labels are found with ultralytics' own rule: replace the last `/images/` of the image path with `/labels/` and the
suffix with `.txt`. Validation catches what ultralytics would otherwise skip with a warning (and train without).
"""

import math
import os
from dataclasses import dataclass
from pathlib import Path

from src.common.atomic import atomic_write_text
from src.common.errors import UserError
from src.common.image_files import IMAGE_SUFFIXES

# ultralytics accepts coordinates up to 1% outside [0, 1] (and clips them); beyond that it drops the whole image.
_COORD_TOLERANCE = 0.01


@dataclass(frozen=True)
class ResolvedSplit:
    role: str  # "train" / "val" / "test": names the split in messages and in the data yaml
    spec: str  # what the user passed
    kind: str  # "folder" (a), "images_dir" (b) or "list" (c)
    source: Path  # absolute path ultralytics reads: an images folder or the .txt list
    images: tuple[Path, ...]
    labels: tuple[Path, ...]
    list_needs_rewrite: bool = False  # a .txt with paths ultralytics would read relative to the cwd, not the .txt


def label_path(image: Path) -> Path | None:
    """ultralytics' img2label_paths rule; None when the path has no `/images/` folder in it."""
    s, marker = os.fspath(image), f"{os.sep}images{os.sep}"
    if marker not in s:
        return None
    return Path(f"{os.sep}labels{os.sep}".join(s.rsplit(marker, 1)).rsplit(".", 1)[0] + ".txt")


def _is_image(name: str) -> bool:
    return name.rpartition(".")[-1].lower() in IMAGE_SUFFIXES


def _walk_images(folder: Path) -> list[Path]:
    # Like ultralytics' recursive glob("**/*.*"): hidden files and folders are skipped.
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(root, f) for f in files if not f.startswith(".") and _is_image(f)]
    return [Path(p) for p in sorted(found)]


def _read_list(txt: Path, role: str) -> tuple[list[Path], bool]:
    try:
        lines = txt.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{role} data {txt}: cannot read the image list ({exc.__class__.__name__}: {exc})") from None
    images, needs_rewrite = [], False
    for lineno, raw in enumerate(lines, 1):
        entry = raw.strip()
        if not entry:
            continue
        if not _is_image(entry):
            raise UserError(f"{role} data {txt} line {lineno}: {entry!r} is not an image path "
                            f"(suffixes: {', '.join(sorted(IMAGE_SUFFIXES))}); list one image path per line")
        path = Path(entry).expanduser()
        needs_rewrite = needs_rewrite or entry.startswith("~")  # ultralytics does not expand ~
        if not path.is_absolute():
            needs_rewrite = needs_rewrite or not entry.startswith("./")
            path = txt.parent / path
        images.append(Path(os.path.normpath(path)))
    return images, needs_rewrite


def resolve_split(spec: str, role: str) -> ResolvedSplit:
    """Find the images (and their label paths) of one split given as folder (a), images/<split> folder (b) or .txt."""
    if not spec or not str(spec).strip():
        raise UserError(f"{role} data: no path given; pass a folder holding images/ and labels/, or a .txt list")
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"{role} data {spec} does not exist; check the path")
    needs_rewrite = False
    if path.is_file():
        if path.suffix.lower() != ".txt":
            raise UserError(f"{role} data {spec} is a file but not a .txt list of images; pass a folder holding "
                            "images/ and labels/, an .../images/<split> folder, or a .txt list")
        source = path.resolve()
        images, needs_rewrite = _read_list(source, role)
        kind = "list"
    elif (path / "images").is_dir():
        kind, source = "folder", (path / "images").resolve()
        images = _walk_images(source)
    else:
        kind, source = "images_dir", path.resolve()
        if "images" not in source.parts:
            hint = f" (did you mean {path / role}?)" if (path / role / "images").is_dir() else ""
            raise UserError(f"{role} data {spec} has no images/ folder and is not inside one{hint}; pass a folder "
                            "holding images/ and labels/, or an .../images/<split> folder with labels in "
                            ".../labels/<split>")
        images = _walk_images(source)
    labels = []
    for image in images:
        label = label_path(image)
        if label is None:
            raise UserError(f"{role} data {spec}: image {image} is not inside an images/ folder, so its label file "
                            "cannot be found (labels live where the last /images/ is replaced by /labels/)")
        labels.append(label)
    return ResolvedSplit(role, str(spec), kind, source, tuple(images), tuple(labels), needs_rewrite)


def _check_line(parts: list[str], num_classes: int) -> str | None:
    if len(parts) != 5:
        return (f"expected 5 columns 'class x_center y_center width height', found {len(parts)} "
                "(polygon labels are not supported)")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return f"non-numeric value in {' '.join(parts)!r}"
    if not all(math.isfinite(v) for v in values):
        return f"non-finite value in {' '.join(parts)!r}"
    cls, coords = values[0], values[1:]
    if cls != int(cls) or not 0 <= cls < num_classes:
        return f"class id {parts[0]} is not one of 0..{num_classes - 1} (the data yaml has {num_classes} names)"
    if not all(-_COORD_TOLERANCE <= v <= 1 + _COORD_TOLERANCE for v in coords) or min(coords[2:]) < 0:
        return f"coordinates {' '.join(parts[1:])} are not normalized to [0, 1] (divide pixels by image width/height)"
    return None


def _check_labels(labels, num_classes: int) -> tuple[list[str], int, int]:
    """Problems as 'file line N: why', plus the number of boxes and of background (empty) label files."""
    problems, boxes, background = [], 0, 0
    for label in labels:
        try:
            text = label.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"label file {label}: cannot read it ({exc.__class__.__name__})")
            continue
        rows = 0
        for lineno, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            rows += 1
            problem = _check_line(parts, num_classes)
            if problem:
                problems.append(f"label file {label} line {lineno}: {problem}")
        boxes += rows
        background += rows == 0
    return problems, boxes, background


def _missing(paths) -> list[Path]:
    # One listing per folder instead of one stat per file: fast on network file systems too.
    listing = {}
    missing = []
    for p in paths:
        names = listing.get(p.parent)
        if names is None:
            names = listing[p.parent] = set(os.listdir(p.parent)) if p.parent.is_dir() else set()
        if p.name not in names:
            missing.append(p)
    return missing


def validate_split(split: ResolvedSplit, names: list[str]) -> dict:
    """Raise UserError on anything ultralytics would skip or choke on; return `{images, boxes, background}`."""
    where = f"{split.role} data {split.spec}"
    if not split.images:
        raise UserError(f"{where}: no images found in {split.source} (looked for .jpg, .png and other image files)")
    if split.kind == "folder" and not (split.source.parent / "labels").is_dir():
        raise UserError(f"{where} has images/ but no labels/ folder; put one YOLO .txt per image in "
                        f"{split.source.parent / 'labels'}")
    missing_images = _missing(split.images) if split.kind == "list" else []
    if missing_images:
        raise UserError(f"{where}: {len(missing_images)} listed image(s) do not exist, e.g. {missing_images[0]}; "
                        "fix the list (relative paths are relative to the .txt file's folder)")
    missing = _missing(split.labels)
    if missing:
        raise UserError(f"{where}: {len(missing)} of {len(split.images)} images have no label file, e.g. "
                        f"{missing[0]}; add one .txt per image (an empty file marks an image with no objects)")
    problems, boxes, background = _check_labels(split.labels, len(names))
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise UserError(f"{where}: {problems[0]}{more}; fix or remove the bad line(s)")
    _check_images(split.images, where)
    return {"images": len(split.images), "boxes": boxes, "background": background}


def _check_images(images, where: str) -> None:
    """Every image must decode: ultralytics silently drops a corrupt one (or crashes when all are)."""
    from PIL import Image

    for path in images:
        try:
            with Image.open(path) as im:
                im.verify()  # structure and checksums, without decoding all pixels
                width, height = im.size
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for damaged files; each is one clear line
            raise UserError(f"{where}: image {path} cannot be read ({type(exc).__name__}: "
                            f"{str(exc)[:120]}); replace or remove it and its label") from None
        if width < 10 or height < 10:
            raise UserError(f"{where}: image {path} is {width}x{height} px; ultralytics needs at least 10x10")


def _yaml_source(split: ResolvedSplit, key: str, folder: Path) -> str:
    if not split.list_needs_rewrite:
        return str(split.source)
    # ultralytics reads relative entries (other than ./x) against the cwd; hand it absolute paths instead.
    listing = folder / f"{key}_images.txt"
    atomic_write_text(listing, "".join(f"{p}\n" for p in split.images))
    return str(listing)


def write_effective_data_yaml(out_path, train: ResolvedSplit, val: ResolvedSplit, test: ResolvedSplit | None = None,
                              *, names: list[str]) -> Path:
    """Write the ultralytics data yaml (absolute split paths, names, nc) atomically; return its path."""
    from src.common.yaml_io import dump_yaml

    out_path = Path(out_path).absolute()
    splits = {"train": train, "val": val, **({"test": test} if test is not None else {})}
    data = {key: _yaml_source(split, key, out_path.parent) for key, split in splits.items()}
    data.update(names=dict(enumerate(names)), nc=len(names))
    atomic_write_text(out_path, dump_yaml(data))
    return out_path
