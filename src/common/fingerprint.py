"""Dataset content fingerprints: proof that a run saw exactly these images and labels.

A fingerprint is a plain YAML/JSON-safe dict: `version`, `files`, `bytes`, `sha256` (over the sorted
`(relative posix path, content sha256)` of every image, label and mask file) and `names` (class names).
Paths are relative to the split folder (or to a `.txt` image list's folder), so a dataset that moves keeps
its fingerprint. Ultralytics' `*.cache`, `.npy` and hidden files are never hashed: only image suffixes and
`.txt` labels count.

Content hashes are cached per file, keyed by absolute path and validated by (size, mtime_ns, ctime_ns, inode),
in one JSON file (`$STREET_SCENE_CACHE/fingerprints.json`, else `~/.cache/street-scene/fingerprints.json`).
"""

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from src.common.atomic import atomic_write_text
from src.common.errors import UserError
from src.common.image_files import IMAGE_SUFFIXES

FINGERPRINT_VERSION = 1
CACHE_ENV = "STREET_SCENE_CACHE"
CACHE_FILE = "fingerprints.json"
DATA_SUFFIXES = IMAGE_SUFFIXES | {"txt"}
# Files that belong to an image found elsewhere: (folder replacing the last /images/, suffix).
COMPANIONS = (("labels", ".txt"), ("masks", ".png"))
_CACHE_FORMAT = 1
# A file modified this close to the moment it is hashed may change again within the filesystem's timestamp
# granularity without its mtime moving; such hashes are used but not cached (git's "racily clean" rule).
_RACY_NS = 2_000_000_000
_HASH_THREADS = min(8, os.cpu_count() or 1)  # hashlib releases the GIL, so threads hash in parallel
_BATCH = 32
_SMALL = 1 << 20  # read whole below this; file_digest's 256 KiB buffer costs more than a small file

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]


def default_cache_path() -> Path:
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base).expanduser() / CACHE_FILE
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "street-scene" / CACHE_FILE


def split_fingerprint_root(spec: PathLike) -> Path:
    """What a run fingerprints for `--train-data SPEC`: a segmentation split folder (images/ + masks/) itself, a
    detection split folder's images/ (labels are found beside them), or the .txt list / images folder as given."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"dataset path not found: {spec}; pass a dataset split folder or a .txt image list")
    if (path / "masks").is_dir() and (path / "images").is_dir():
        return path.resolve()
    if (path / "images").is_dir():
        return (path / "images").resolve()  # exactly as src.data.detection_data.resolve_split
    return path.resolve()


def fingerprint_dataset(root: PathLike, class_names: Optional[Sequence] = None, cache_path: Optional[Path] = None,
                        *, use_cache: bool = True) -> Dict[str, Any]:
    """Fingerprint a split: a folder (walked recursively) or a `.txt` list of images, as ultralytics reads it."""
    cache = _HashCache(Path(cache_path) if cache_path else default_cache_path()) if use_cache else _HashCache(None)
    result = _fingerprint(Path(root), class_names, cache)
    cache.save()
    return result


def fingerprint_splits(splits: Dict[str, Any], names: Optional[Sequence] = None, cache_path: Optional[Path] = None,
                       *, use_cache: bool = True) -> Dict[str, Any]:
    """{split: fingerprint}; a split given as a list of paths (ultralytics allows it) gets a list of them."""
    cache = _HashCache(Path(cache_path) if cache_path else default_cache_path()) if use_cache else _HashCache(None)
    result: Dict[str, Any] = {}
    for split, paths in splits.items():
        if isinstance(paths, (list, tuple)):
            result[split] = [_fingerprint(Path(p), names, cache) for p in paths]
        else:
            result[split] = _fingerprint(Path(paths), names, cache)
    cache.save()
    return result


def compare_fingerprints(old: Optional[dict], new: Optional[dict]) -> List[str]:
    """Human-readable differences between two fingerprints; empty when they match."""
    if not old or not new:
        return [] if old == new else [f"fingerprint {'missing' if not old else 'present'} before, "
                                      f"{'missing' if not new else 'present'} now"]
    if old.get("version") != new.get("version"):
        return [f"fingerprint version {old.get('version')} -> {new.get('version')}: not comparable, "
                "fingerprint both with the same street-scene version"]
    diffs = []
    if old.get("files") != new.get("files"):
        diffs.append(f"file count {old.get('files')} -> {new.get('files')}")
    if old.get("bytes") != new.get("bytes"):
        diffs.append(f"total bytes {old.get('bytes')} -> {new.get('bytes')}")
    if old.get("sha256") != new.get("sha256"):
        same = "" if diffs else " (same file count and size: file contents or names changed)"
        diffs.append(f"content sha256 {str(old.get('sha256'))[:12]} -> {str(new.get('sha256'))[:12]}{same}")
    if old.get("names") != new.get("names"):
        diffs.append(f"class names {old.get('names')} -> {new.get('names')}")
    return diffs


def compare_split_fingerprints(old: Optional[dict], new: Optional[dict]) -> List[str]:
    """`compare_fingerprints` over `fingerprint_splits` results, each line prefixed with its split."""
    old, new = old or {}, new or {}
    lines = []
    for split in sorted(set(old) | set(new)):
        if split not in new or split not in old:
            lines.append(f"{split}: split only {'before' if split in old else 'now'}")
            continue
        a, b = old[split], new[split]
        if isinstance(a, list) or isinstance(b, list):
            a, b = a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]
            if len(a) != len(b):
                lines.append(f"{split}: {len(a)} -> {len(b)} paths")
                continue
            lines += [f"{split}[{i}]: {d}" for i, (x, y) in enumerate(zip(a, b)) for d in compare_fingerprints(x, y)]
        else:
            lines += [f"{split}: {d}" for d in compare_fingerprints(a, b)]
    return lines


def _fingerprint(root: Path, class_names: Optional[Sequence], cache: "_HashCache") -> Dict[str, Any]:
    root = Path(os.path.abspath(root.expanduser()))
    if root.is_dir():
        anchor, files = root, _files_in_dir(root)
    elif root.is_file() and root.suffix.lower() == ".txt":
        anchor, files = root.parent, _files_in_list(root)
    elif root.exists():
        raise UserError(f"cannot fingerprint {root}: expected a dataset folder or a .txt list of images")
    else:
        raise UserError(f"dataset path not found: {root}; check the data path")
    entries = _hash_files(files, cache)
    digest = hashlib.sha256()
    total = 0
    prefix = str(anchor).rstrip(os.sep) + os.sep
    for rel, size, sha in sorted((_relative(path, prefix), size, sha) for path, size, sha in entries):
        # NUL cannot occur in a path and the hex digest has a fixed length, so records cannot run together.
        digest.update(f"{rel}\0{sha}\n".encode("utf-8", "surrogateescape"))
        total += size
    return {"version": FINGERPRINT_VERSION, "files": len(entries), "bytes": total,
            "sha256": digest.hexdigest(), "names": _normalize_names(class_names)}


def _relative(path: str, prefix: str) -> str:
    # The slice is the common case and ~10x cheaper than relpath, which matters at 100k files.
    rel = path[len(prefix):] if path.startswith(prefix) else os.path.relpath(path, prefix)
    return rel.replace(os.sep, "/")


def _normalize_names(names: Optional[Sequence]) -> Optional[List[str]]:
    if names is None:
        return None
    if isinstance(names, dict):  # ultralytics style {0: "car", 1: "bus"}
        return [str(v) for _, v in sorted(names.items())]
    if isinstance(names, str):
        raise UserError(f"class names must be a list, got the string {names!r}")
    return [str(n) for n in names]


def _is_data_file(name: str) -> bool:
    return not name.startswith(".") and name.rpartition(".")[2].lower() in DATA_SUFFIXES and "." in name


def _raise(exc: OSError) -> None:
    raise UserError(f"cannot read dataset folder {exc.filename}: {exc.strerror}") from None


def _files_in_dir(root: Path) -> List[str]:
    """Image/label files under `root`, plus labels/masks of its images that live outside it (images/train)."""
    found, seen_dirs = [], set()
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen_dirs:  # a symlink loop
            dirnames[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
        found += [os.path.join(dirpath, n) for n in filenames if _is_data_file(n)]
    prefix = str(root) + os.sep
    images = [p for p in found if p.rpartition(".")[2].lower() in IMAGE_SUFFIXES]
    outside = {c for c in _companions(images) if not c.startswith(prefix) and os.path.isfile(c)}
    return found + sorted(outside)


def _files_in_list(list_file: Path) -> List[str]:
    """Images named in a `.txt` list; relative entries are relative to the list's folder (street-scene's rule,
    see src/data/detection_data.py, which hands ultralytics absolute paths for such lists)."""
    try:
        lines = list_file.read_text(encoding="utf-8-sig").strip().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read image list {list_file}: {exc}") from None
    images = []
    for line in (x.strip() for x in lines):
        path = os.path.expanduser(line)
        if path and path.rpartition(".")[2].lower() in IMAGE_SUFFIXES:
            images.append(os.path.abspath(os.path.join(list_file.parent, path)))
    missing = [p for p in images if not os.path.isfile(p)]
    if missing:
        raise UserError(f"image list {list_file} names {len(missing)} missing file(s), first {missing[0]}; "
                        "fix the list or restore the images")
    images = sorted(set(images))
    return images + sorted({c for c in _companions(images) if os.path.isfile(c)} - set(images))


def _companions(images: List[str]) -> List[str]:
    """ultralytics `img2label_paths` (last /images/ -> /labels/, suffix -> .txt), and likewise masks/*.png."""
    sa = f"{os.sep}images{os.sep}"
    return [f"{os.sep}{folder}{os.sep}".join(p.rsplit(sa, 1)).rsplit(".", 1)[0] + suffix
            for folder, suffix in COMPANIONS for p in images]


def _hash_files(paths: List[str], cache: "_HashCache") -> List[Tuple[str, int, str]]:
    """(path, size, sha256) of each file, from the cache when size/mtime/ctime/inode are unchanged."""
    stats = [_stat(p) for p in paths]
    shas = [cache.lookup(p, st) for p, st in zip(paths, stats)]
    todo = [i for i, sha in enumerate(shas) if sha is None]
    hash_batch = lambda batch: [_hash_one(paths[i], stats[i]) for i in batch]  # noqa: E731
    # Batches, not single files, per task: per-task overhead would dominate on small label files.
    batches = [todo[k:k + _BATCH] for k in range(0, len(todo), _BATCH)]
    if len(batches) > 1 and _HASH_THREADS > 1:
        with ThreadPoolExecutor(_HASH_THREADS) as pool:
            hashed = [sha for result in pool.map(hash_batch, batches) for sha in result]
    else:
        hashed = hash_batch(todo)
    now = time.time_ns()
    for i, sha in zip(todo, hashed):
        shas[i] = sha
        if now - stats[i].st_mtime_ns > _RACY_NS:
            cache.store(paths[i], stats[i], sha)
    return [(p, st.st_size, sha) for p, st, sha in zip(paths, stats, shas)]


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        raise UserError(f"cannot read dataset file {path}: {exc.strerror}") from None


def _hash_one(path: str, before: os.stat_result) -> str:
    try:
        with open(path, "rb") as f:
            if before.st_size < _SMALL:
                sha = hashlib.sha256(f.read()).hexdigest()
            else:
                sha = hashlib.file_digest(f, "sha256").hexdigest()
        after = os.stat(path)
    except OSError as exc:
        raise UserError(f"cannot read dataset file {path}: {exc.strerror}") from None
    if _signature(after) != _signature(before):
        raise UserError(f"dataset file {path} changed while it was being fingerprinted; try again when "
                        "nothing is writing to the dataset")
    return sha


def _signature(st: os.stat_result) -> List[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class _HashCache:
    """path -> [size, mtime_ns, ctime_ns, inode, sha256]; `path=None` disables it. Never fails a fingerprint."""

    def __init__(self, path: Optional[Path]):
        self.path = path
        self.entries = _read_cache(path) if path else {}
        self.new: Dict[str, list] = {}

    def lookup(self, file: str, st: os.stat_result) -> Optional[str]:
        entry = self.entries.get(file)
        # Checked here, not on load (a warm run reads every entry once): a damaged entry is just not trusted.
        if type(entry) is list and len(entry) == 5 and entry[:4] == _signature(st):
            sha = entry[4]
            return sha if type(sha) is str and len(sha) == 64 else None
        return None

    def store(self, file: str, st: os.stat_result, sha: str) -> None:
        if self.path:
            self.new[file] = [*_signature(st), sha]

    def save(self) -> None:
        """Merge new entries into the file as it is now and replace it atomically (last writer wins)."""
        if not self.path or not self.new:
            return
        entries = {k: v for k, v in _read_cache(self.path).items() if _valid_entry(v)}
        entries.update(self.new)
        text = json.dumps({"format": _CACHE_FORMAT, "entries": entries}, separators=(",", ":"))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # the cache folder is ours to create
            atomic_write_text(self.path, text)
        except OSError as exc:
            log.warning("fingerprint cache %s not written (%s); fingerprints still correct, only slower",
                        self.path, exc)
            return
        self.entries, self.new = entries, {}


def _read_cache(path: Path) -> Dict[str, list]:
    """Valid entries of the cache file; a missing, unreadable or corrupt file reads as empty."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    # ValueError: bad JSON or UTF-8, an integer too long to convert; RecursionError: nested thousands deep.
    except (OSError, ValueError, RecursionError) as exc:
        log.warning("ignoring unreadable fingerprint cache %s (%s); it will be rebuilt", path,
                    type(exc).__name__ if isinstance(exc, RecursionError) else exc)
        return {}
    if not isinstance(data, dict) or data.get("format") != _CACHE_FORMAT or not isinstance(data.get("entries"), dict):
        log.warning("ignoring fingerprint cache %s with an unknown layout; it will be rebuilt", path)
        return {}
    return data["entries"]


def _valid_entry(entry: Any) -> bool:
    return (type(entry) is list and len(entry) == 5 and isinstance(entry[4], str) and len(entry[4]) == 64
            and all(type(x) is int for x in entry[:4]))
