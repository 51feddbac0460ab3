"""Make ultralytics 8.4 work with no network and write nothing outside the folders we choose.

`configure_ultralytics(config_dir)` must run before the first `import ultralytics` in a process, because
ultralytics reads YOLO_OFFLINE, YOLO_AUTOINSTALL and YOLO_CONFIG_DIR once, at import. Every path that trains or
evaluates a detector calls it first; calling it again is cheap (a few stats and dict lookups).

What it closes (checked against the ultralytics 8.4.190 source):
- import-time DNS probe, pip update check, auto-install, analytics: YOLO_OFFLINE=1, YOLO_AUTOINSTALL=0;
- `check_font` on every train/val ignores YOLO_OFFLINE and, without a font, sends a HEAD request to GitHub
  (3 s timeout) each time: a local TTF (matplotlib's DejaVuSans) placed where it looks;
- analytics and experiment-tracker callbacks: settings sync/integrations off (our own MLflow/W&B sync is separate);
- Platform ("hub") streaming, enabled by ULTRALYTICS_API_KEY or settings api_key: both cleared;
- settings runs_dir/weights_dir (default: the cwd's git root) point into the config dir instead;
- label caches: ultralytics writes `<labels dir>.cache` (e.g. `labels/train.cache`) beside the user's labels and
  reads it back with `np.load(allow_pickle=True)`, i.e. unpickles a file from the user's data folder. The two
  functions ultralytics.data.dataset calls for that (`load_dataset_cache_file`, `save_dataset_cache_file`, looked
  up in its module namespace at call time) are replaced by wrappers that use
  `<ultralytics config dir>/label-caches/<sha256 of the absolute cache path>.cache` instead, so nothing is read
  from or written to the dataset. The wrappers check the pinned 8.4.190 internals and fail loudly if they moved.

Threads: `import ultralytics` sets OMP_NUM_THREADS=1 when unset; if torch is not yet imported, that pins torch to
one intra-op thread for the whole process (segmentation included) and leaks into every subprocess. We import torch
first, so the env var no longer changes torch's pool, and then restore the variable as we found it. The ultralytics
trainer/validator still call `torch.set_num_threads(cpu_count - 1)` on CPU; the engine restores the count after.
"""

import functools
import hashlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path

from src.common.atomic import atomic_write_bytes

# Tracker switches; only names present in `SETTINGS.defaults` are written (8.4 has no "hub": see api_key).
_TRACKER_SETTINGS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb", "hub")
# check_font() asks for Arial.ttf, or Arial.Unicode.ttf when a class name is not ASCII.
_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")


def default_config_dir() -> Path:
    """Per-user folder for ultralytics settings and fonts.

    $STREET_SCENE_CACHE/ultralytics, else ~/.cache/street-scene/ultralytics.
    """
    cache = os.environ.get("STREET_SCENE_CACHE")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache" / "street-scene"
    return base / "ultralytics"


def configure_ultralytics(config_dir: Path) -> None:
    """Set ultralytics up for offline use with its settings and fonts under `config_dir`; safe to call repeatedly.

    `config_dir` takes effect only if ultralytics is not imported yet in this process; otherwise the directory
    ultralytics already chose is completed the same way.
    """
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.pop("ULTRALYTICS_API_KEY", None)  # would stream training to the Ultralytics Platform
    if "ultralytics" not in sys.modules:
        os.environ["YOLO_CONFIG_DIR"] = str(Path(config_dir).expanduser().resolve())
    utils = _import_ultralytics_utils()
    if utils.ONLINE:
        raise RuntimeError(
            "ultralytics was imported before configure_ultralytics() without YOLO_OFFLINE=1; "
            "call configure_ultralytics() before anything imports ultralytics"
        )
    _place_fonts(Path(utils.USER_CONFIG_DIR))
    _update_settings(utils.SETTINGS, Path(utils.USER_CONFIG_DIR))
    redirect_label_caches(Path(utils.USER_CONFIG_DIR) / "label-caches")


def _import_ultralytics_utils():
    omp_before = os.environ.get("OMP_NUM_THREADS")
    import torch  # noqa: F401  (first, so ultralytics' OMP_NUM_THREADS=1 cannot shrink torch's thread pool)
    import ultralytics.utils as utils

    if omp_before is None:
        os.environ.pop("OMP_NUM_THREADS", None)  # don't let the side effect leak into subprocesses
    return utils


def _bundled_font() -> Path:
    # matplotlib (an ultralytics dependency) ships DejaVuSans; found without importing matplotlib.
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("matplotlib is not installed; ultralytics needs it and its bundled DejaVuSans.ttf font")
    return Path(spec.submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"


def _place_fonts(user_config_dir: Path) -> None:
    missing = [user_config_dir / name for name in _FONT_NAMES if not (user_config_dir / name).is_file()]
    if not missing:
        return
    data = _bundled_font().read_bytes()
    user_config_dir.mkdir(parents=True, exist_ok=True)  # atomic writes never create folders
    for path in missing:
        atomic_write_bytes(path, data)


def _update_settings(settings, user_config_dir: Path) -> None:
    # runs_dir/weights_dir default to the cwd's git root when settings.json is first created; a relative `project`
    # or a bare weights name would land there. Point them into our cache so a slip never writes into a checkout.
    wanted = {
        "sync": False, "api_key": "", **dict.fromkeys(_TRACKER_SETTINGS, False),
        "runs_dir": str(user_config_dir / "runs"), "weights_dir": str(user_config_dir / "weights"),
    }
    changes = {k: v for k, v in wanted.items() if k in settings.defaults and settings.get(k) != v}
    if changes:  # only write settings.json when something differs: repeated calls stay read-only
        settings.update(changes)


# What ultralytics.data.dataset calls to read and write its label caches, with the parameters we rely on.
_CACHE_FUNCTIONS = {"load_dataset_cache_file": ["path"], "save_dataset_cache_file": ["prefix", "path", "x", "version"]}


def redirect_label_caches(cache_dir: Path) -> None:
    """Make ultralytics keep its dataset label caches under `cache_dir` (idempotent; a new dir replaces the old)."""
    import ultralytics.data.dataset as dataset
    import ultralytics.data.utils as data_utils

    cache_dir = Path(cache_dir).expanduser().resolve()
    for name, params in _CACHE_FUNCTIONS.items():
        current = getattr(dataset, name, None)
        original = getattr(current, "__wrapped__", current)
        if original is not getattr(data_utils, name, None) or list(inspect.signature(original).parameters) != params:
            raise RuntimeError(f"ultralytics.data.dataset.{name} is not the 8.4.190 function street-scene redirects "
                               "(label caches would land in the dataset folder); pin ultralytics==8.4.190 or update "
                               "src/tasks/detection/offline.py")
        if getattr(current, "cache_dir", None) != cache_dir:
            setattr(dataset, name, _redirected(original, cache_dir))


def label_cache_path(cache_dir: Path, path) -> Path:
    """Where the label cache ultralytics would keep at `path` lives instead."""
    digest = hashlib.sha256(str(Path(path).expanduser().resolve()).encode()).hexdigest()
    return Path(cache_dir) / f"{digest}.cache"


def _redirected(original, cache_dir: Path):
    def load_dataset_cache_file(path):
        return original(label_cache_path(cache_dir, path))

    def save_dataset_cache_file(prefix, path, x, version):
        target = label_cache_path(cache_dir, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        return original(prefix, target, x, version)

    wrappers = {"load_dataset_cache_file": load_dataset_cache_file, "save_dataset_cache_file": save_dataset_cache_file}
    wrapper = functools.update_wrapper(wrappers[original.__name__], original)  # sets __wrapped__
    wrapper.cache_dir = cache_dir
    return wrapper
