"""Detection weights: fp32 snapshots, a stable tensor hash, rebuilding a YOLO model, local pretrained weights.

Our checkpoints hold `model_state` (fp32 state dict) and `model_spec` (architecture name, the resolved model yaml
dict, class names, image size): plain data that loads with `torch.load(weights_only=True)`, never pickled classes.
Every model dict passes `model_yaml.check_model_yaml` before ultralytics builds from it (ultralytics evaluates
strings of that dict as code), and is built with ultralytics' no-eval parsing switched on as a second guard.
"""

import contextlib
from pathlib import Path

from src.common.checkpoint import to_fp32_cpu
from src.common.errors import UserError
from src.tasks.detection.model_yaml import check_model_spec, check_model_yaml, load_architecture_yaml

# A built-in detection yaml used only to create the `YOLO` wrapper; its module is replaced at once, so a custom
# architecture file that has since moved is never needed to rebuild a trained model.
_WRAPPER_YAML = "yolov8n.yaml"


def fp32_cpu_state(module) -> dict:
    """A detached fp32 CPU copy of `module.state_dict()` (integer buffers keep their dtype)."""
    return to_fp32_cpu(module.state_dict())


def plain_data(value, where: str = "model_yaml"):
    """A deep copy of `value` made of dict/list/str/int/float/bool/None only, so weights_only loading accepts it."""
    if isinstance(value, dict):
        return {str(k): plain_data(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"{where} holds a {type(value).__name__}; a checkpoint may hold only plain data")


def build_model(model_spec: dict, model_state: dict, where: str = "checkpoint"):
    """An ultralytics `YOLO` whose `.model` is a DetectionModel rebuilt from `model_spec`, weights loaded strictly.

    `model_spec` is checked first (UserError naming `where` if it describes anything but allow-listed layers).
    """
    return _wrap(_rebuild(model_spec, model_state, where))


def _rebuild(model_spec: dict, model_state: dict, where: str):
    from ultralytics.nn.tasks import DetectionModel

    spec = check_model_spec(model_spec, where)
    names, cfg = spec["names"], spec["model_yaml"]  # a fresh copy: DetectionModel writes nc/channels into it
    with _build_errors_as_user_errors(f"{where}: model_spec.model_yaml"), no_eval_model_parsing():
        module = DetectionModel(cfg, ch=cfg.get("channels", 3), nc=len(names), verbose=False)
    try:
        module.load_state_dict(model_state, strict=True)
    except RuntimeError as e:  # missing/unexpected keys or shape mismatch: state and spec don't belong together
        first = str(e).splitlines()[0]
        raise UserError(f"checkpoint weights do not fit its model_spec ({spec['architecture']}): {first}")
    module.names = dict(enumerate(names))
    return module.eval()


def build_untrained_yolo(architecture):
    """`YOLO(architecture)` for a built-in name (yolov8n.yaml) or a yaml path, checked before ultralytics parses it.

    The file is read twice before anything is built: with our safe loader (clear errors) and with ultralytics' own
    `yaml_model_load` (the very dict YOLO() builds); both must pass check_model_yaml. UserError otherwise.
    """
    from ultralytics import YOLO
    from ultralytics.nn.tasks import yaml_model_load

    load_architecture_yaml(architecture)  # resolution without downloads, allow-list; UserError when refused
    name = str(architecture).strip()
    where = f"model yaml {name}"
    with _build_errors_as_user_errors(where):
        check_model_yaml(yaml_model_load(name), where)
        with no_eval_model_parsing():
            yolo = YOLO(name)
    if yolo.task != "detect":  # unreachable after the head check; kept as the contract train_yolo relies on
        raise UserError(f"model yaml {name!r} builds a {yolo.task} model; detection needs a detect yaml")
    return yolo


def _wrap(module):
    from ultralytics import YOLO

    yolo = YOLO(_WRAPPER_YAML, task="detect")
    module.args, module.task = yolo.model.args, yolo.task  # what YOLO(yaml) attaches to the module it builds
    yolo.model = module
    return yolo


@contextlib.contextmanager
def no_eval_model_parsing():
    """ultralytics' restricted model parsing for this thread: `activation` resolved without eval(), layers must be
    nn.Module classes. A second guard behind check_model_yaml (8.4.190: `_SafeLoad._local.active`)."""
    from ultralytics.nn import tasks

    local = tasks._SafeLoad._local
    before = getattr(local, "active", False)
    local.active = True
    try:
        yield
    finally:
        local.active = before


@contextlib.contextmanager
def _build_errors_as_user_errors(where: str):
    # A description that passed the allow-list can still be inconsistent (a Concat of mismatched sizes, a
    # channel count a layer rejects): ultralytics/torch then raise one of these while building.
    try:
        yield
    except (TypeError, ValueError, IndexError, KeyError, RuntimeError, ZeroDivisionError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{where} does not build a model ({type(e).__name__}: {first}); "
                        "start from a built-in detection yaml such as yolov8n.yaml") from e


def load_pretrained(weights: Path):
    """The model held by a local weights file, for `YOLO.load()`; never downloads and never unpickles code.

    Accepts a detection checkpoint of ours (`model_state` + `model_spec`) or an ultralytics `.pt`, which is read
    with ultralytics' own weights-only loader (an allow-list of its model classes).
    """
    import torch

    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"pretrained weights {weights} not found; give the path of an existing local weights file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files; each becomes one clear line
        if "Unsupported global" in str(e) and path.suffix == ".pt":
            return _load_ultralytics_pt(path)  # pickles its model class: needs ultralytics' allow-list
        reason = " ".join(str(e).split("WeightsUnpickler error:")[-1].split())[:200]
        raise UserError(f"pretrained weights {path} cannot be read: corrupt, truncated or not a torch file "
                        f"({type(e).__name__}: {reason})")
    spec = ckpt.get("model_spec") if isinstance(ckpt, dict) else None
    if isinstance(spec, dict) and "model_yaml" in spec and "model_state" in ckpt:
        return _rebuild(spec, ckpt["model_state"], f"pretrained weights {path}")
    if path.suffix == ".pt":  # loaded above only if an earlier ultralytics safe load allow-listed its classes
        return _load_ultralytics_pt(path)
    raise UserError(f"pretrained weights {path} are not a detection checkpoint (model_state + model_spec with "
                    "model_yaml); pass a detection best_model.pth or an ultralytics YOLO .pt")


def _load_ultralytics_pt(path: Path):
    from ultralytics.nn.tasks import torch_safe_load

    try:
        ckpt, _ = torch_safe_load(str(path), safe_only=True)
    except (TypeError, ModuleNotFoundError) as e:  # ultralytics' messages for refused or damaged files
        raise UserError(f"pretrained weights {path} refused: {str(e).strip().splitlines()[0]}")
    module = ckpt.get("ema") or ckpt.get("model")
    if module is None or not hasattr(module, "yaml"):
        raise UserError(f"pretrained weights {path} hold no ultralytics model ('ema'/'model' missing)")
    check_model_yaml(module.yaml, f"pretrained weights {path}: model yaml")  # never rebuilt from, but refused
    return module.float()


def legacy_checkpoint(obj, path: Path) -> dict:
    """`model_state` + `model_spec` from an unpickled ultralytics `.pt` dict (--allow-legacy-checkpoint)."""
    module = (obj.get("ema") or obj.get("model")) if isinstance(obj, dict) else None
    if module is None or not hasattr(module, "yaml"):
        raise UserError(f"legacy checkpoint {path} holds no ultralytics detection model ('ema'/'model' missing)")
    names = module.names if isinstance(module.names, dict) else dict(enumerate(module.names))
    imgsz = (obj.get("train_args") or {}).get("imgsz", 640)
    spec = {"architecture": f"legacy:{Path(path).name}",
            "model_yaml": check_model_yaml(module.yaml, f"legacy checkpoint {path}: model yaml"),
            "names": [str(names[i]) for i in range(len(names))], "imgsz": int(imgsz)}
    return {"model_state": fp32_cpu_state(module.float()), "model_spec": spec}
