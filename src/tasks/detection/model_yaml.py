"""Model descriptions are data: an allow-list check of ultralytics model dicts before ultralytics builds them.

ultralytics 8.4.190 turns strings of a model dict into code while building it (nn/tasks.py):
- `parse_model`: `eval(d["activation"])` (unless its opt-in restricted mode is on);
- `parse_model`: a layer's module name goes through `globals()[m]` (every name in nn/tasks.py: `torch_load`,
  `check_requirements`, `check_file`, ... are called with the layer's args), `getattr(torch.nn, m[3:])` for
  `nn.*`, and `getattr(__import__("torchvision").ops, m[16:])` for `torchvision.ops.*`;
- `parse_model`: each string arg becomes `locals()[a]` (any local of parse_model) or `ast.literal_eval(a)`;
- `parse_model`: `scales[d["scale"]]`, `ch[f]` for every `from` index, `round(n * depth)` repeats;
- `_initialize_yolo_model`: `d["backbone"][0][2] == "Silence"` is rewritten to `nn.Identity`; `d["nc"]`, `inplace`;
- `yaml_model_load` / `check_yaml` / `check_file`: a name that is not a local file is searched in the package
  (`glob`), a URL (http, https, ul://, gs://, ...) is downloaded; `guess_model_scale` reads the scale off the name;
- `guess_model_task`: `cfg["head"][-1][-2]` picks the task, and `YOLO()` picks its class from the file name
  (`-world`, `yoloe`) and the head (`RTDETR`); its own `eval()`s run on fixed strings, never on the dict.

`check_model_yaml` accepts only what the built-in v3/v5/v6/v8/v9/v10/11/12/26 detection yamls use; it never
evaluates anything. `load_architecture_yaml` resolves an architecture name the way ultralytics does, without
downloading, and reads it with our safe YAML loader. Neither imports torch or ultralytics.
"""

import glob
import importlib.util
import math
import os
import re
import reprlib
from pathlib import Path

from src.common.errors import UserError

# Layer classes parse_model finds by name in ultralytics.nn.tasks; detection building blocks only. Left out:
# TorchVision/Index (load torchvision models and weights: downloads), heads of other tasks (Classify, Segment*,
# Pose*, OBB*, Depth, SemanticSegment), open-vocabulary layers (WorldDetect, YOLOE*, C2fAttn, ImagePoolingAttn:
# text models) and RTDETRDecoder (turns YOLO into RTDETR).
LAYER_MODULES = frozenset({
    "A2C2f", "AConv", "ADown", "AIFI", "Bottleneck", "BottleneckCSP", "C1", "C2", "C2PSA", "C2f", "C2fCIB",
    "C2fPSA", "C3", "C3Ghost", "C3TR", "C3k2", "C3x", "CBFuse", "CBLinear", "Concat", "Conv", "ConvTranspose",
    "DWConv", "DWConvTranspose2d", "ELAN1", "Focus", "GhostBottleneck", "GhostConv", "HGBlock", "HGStem", "PSA",
    "RepC3", "RepNCSPELAN4", "ResNetLayer", "SCDown", "SPP", "SPPELAN", "SPPF",
})
DETECT_HEADS = frozenset({"Detect", "v10Detect"})  # the last layer; guess_model_task() calls both "detect"
# `nn.<Name>` layers (parse_model resolves them with getattr(torch.nn, Name)); `torch.nn.<Name>` does not resolve.
TORCH_NN_LAYERS = frozenset({"AvgPool2d", "BatchNorm2d", "ConvTranspose2d", "Identity", "MaxPool2d", "Upsample",
                             "ZeroPad2d"})
# String args: "nc" -> parse_model's local nc, "None" -> None (literal_eval), the rest are Upsample modes.
ARG_STRINGS = frozenset({"nc", "None", "nearest", "bilinear"})
ACTIVATIONS = frozenset({"CELU", "ELU", "GELU", "Hardsigmoid", "Hardswish", "Hardtanh", "Identity", "LeakyReLU",
                         "Mish", "ReLU", "ReLU6", "SELU", "Sigmoid", "SiLU", "Softplus", "Tanh"})
_NUMBER = r"[-+]?(?:[0-9]{1,6}(?:\.[0-9]{0,6})?|\.[0-9]{1,6})(?:[eE][-+]?[0-9]{1,2})?"
_ACT_ARG = rf"(?:{_NUMBER}|True|False)"
# `nn.SiLU()`, `torch.nn.ReLU()`, `nn.LeakyReLU(0.1)`, `nn.Hardtanh(-1, 1)`: at most two literal arguments.
_ACTIVATION_RE = re.compile(rf"(?:torch\.)?nn\.([A-Za-z0-9]{{1,32}})\((?:{_ACT_ARG}(?:, ?{_ACT_ARG})?)?\)")
_SCALE_RE = re.compile(r"[A-Za-z0-9_]{1,8}")

MAX_LAYERS = 512  # the built-in detection yamls have at most 43
MAX_REPEATS = 64  # at most 18 there
MAX_ARGS = 16  # items of one list (args, nested lists, `from` lists); at most 5 there
MAX_ARG_NESTING = 2  # args may hold lists of numbers, not deeper (v9's CBLinear: [[64, 128, 256]])
MAX_INT = 8192  # channel counts and other integers (at most 1024 there)
MAX_FLOAT = 1e4
MAX_TEXT = 4096  # yaml_file

_TOP_KEYS = ("nc", "scales", "scale", "backbone", "head", "activation", "depth_multiple", "width_multiple",
             "end2end", "reg_max", "channels", "ch", "inplace", "yaml_file")  # `ch`: pre-8.1 checkpoints


def check_model_yaml(model_yaml, where: str) -> dict:
    """A plain copy of `model_yaml` if it holds only allow-listed values; UserError naming `where` otherwise.

    Run it on every model dict before ultralytics sees it: ultralytics evaluates strings of this dict as code.
    """
    if not isinstance(model_yaml, dict):
        raise UserError(f"{where}: the model description is a {type(model_yaml).__name__}, not a mapping; "
                        "use an ultralytics detection model yaml such as yolov8n.yaml")
    head = model_yaml.get("head")
    if isinstance(head, (list, tuple)) and head and isinstance(head[-1], (list, tuple)) and len(head[-1]) == 4:
        _check_module(head[-1][2], len(head), True, f"{where}: head[{len(head) - 1}]")  # the task first: clearest
    unknown = sorted(_short(k) for k in model_yaml if k not in _TOP_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown model yaml keys {', '.join(unknown)}; allowed: {', '.join(_TOP_KEYS)}")
    for key in ("nc", "backbone", "head"):
        if key not in model_yaml:
            raise UserError(f"{where}: the model yaml has no '{key}'; copy the layout of a built-in detection yaml")
    out = {}
    for key, value in model_yaml.items():
        out[key] = _TOP_CHECKS[key](value, f"{where}: '{key}'")
    if "scales" in out and out.get("scale") and out["scale"] not in out["scales"]:
        raise UserError(f"{where}: scale {out['scale']!r} is not one of the yaml's scales "
                        f"{', '.join(out['scales'])}; name the file after one of them (yolov8n.yaml -> 'n')")
    out["backbone"], out["head"] = _check_layers(out["backbone"], out["head"], where)
    return out


def check_model_spec(spec, where: str) -> dict:
    """A checkpoint's `model_spec` ({architecture, model_yaml, names, imgsz}) with its model_yaml checked."""
    if not isinstance(spec, dict):
        raise UserError(f"{where}: model_spec is a {type(spec).__name__}, not a mapping; the checkpoint is "
                        "damaged or not a detection checkpoint")
    missing = [k for k in ("architecture", "model_yaml", "names", "imgsz") if k not in spec]
    if missing:
        raise UserError(f"{where}: model_spec lacks {', '.join(missing)}; the checkpoint is damaged or not a "
                        "detection checkpoint")
    names = spec["names"]
    if (not isinstance(names, (list, tuple)) or not 1 <= len(names) <= 10000
            or not all(isinstance(n, str) and len(n) <= 1000 for n in names)):
        raise UserError(f"{where}: model_spec names must be a list of 1 to 10000 class names, got {_short(names)}")
    return {**spec, "architecture": _text(spec["architecture"], f"{where}: model_spec architecture"),
            "model_yaml": check_model_yaml(spec["model_yaml"], f"{where}: model_spec.model_yaml"),
            "names": list(names), "imgsz": _int(spec["imgsz"], f"{where}: model_spec imgsz", 1, 16384)}


def _short(value) -> str:
    """A short one-line repr, safe for hostile values (deep nesting, huge strings)."""
    short = reprlib.Repr()  # keyword arguments only from Python 3.12
    short.maxlevel, short.maxlist, short.maxtuple, short.maxdict = 2, 4, 4, 4
    short.maxstring, short.maxother, short.maxlong = 60, 60, 40
    return short.repr(value)


def _int(value, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserError(f"{what} must be an integer from {low} to {high}, got {_short(value)}")
    return value


def _positive(value, what: str, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= high:
        raise UserError(f"{what} must be a number above 0 and at most {high}, got {_short(value)}")
    return value


def _bool(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{what} must be true or false, got {_short(value)}")
    return value


def _text(value, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT or not value.isprintable():
        raise UserError(f"{what} must be a printable string of at most {MAX_TEXT} characters, got {_short(value)}")
    return value


def _scale(value, what: str) -> str:
    if not isinstance(value, str) or value and not _SCALE_RE.fullmatch(value):
        raise UserError(f"{what} must be a scale letter such as 'n' or 's' (or empty), got {_short(value)}")
    return value


def _scales(value, what: str) -> dict:
    if not isinstance(value, dict) or not 1 <= len(value) <= 8:
        raise UserError(f"{what} must map 1 to 8 scale letters to [depth, width, max_channels]")
    out = {}
    for name, row in value.items():
        _scale(name, f"{what} key")
        if not isinstance(row, (list, tuple)) or len(row) != 3:
            raise UserError(f"{what}[{name!r}] must be [depth, width, max_channels], got {_short(row)}")
        out[name] = [_positive(row[0], f"{what}[{name!r}] depth", 4), _positive(row[1], f"{what}[{name!r}] width", 4),
                     _int(row[2], f"{what}[{name!r}] max_channels", 1, MAX_INT)]
    return out


def _activation(value, what: str) -> str:
    # ultralytics eval()s this string: it must be exactly `[torch.]nn.<Name>(<numbers>)`, nothing else.
    match = _ACTIVATION_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None or match.group(1) not in ACTIVATIONS:
        raise UserError(f"{what} must be written like nn.SiLU() or nn.LeakyReLU(0.1) with one of "
                        f"{', '.join(sorted(ACTIVATIONS))}, got {_short(value)}")
    return value


def _layer_list(value, what: str) -> list:
    if not isinstance(value, (list, tuple)) or len(value) > MAX_LAYERS:
        raise UserError(f"{what} must be a list of at most {MAX_LAYERS} layers [from, repeats, module, args]")
    return list(value)


_TOP_CHECKS = {
    "nc": lambda v, w: _int(v, w, 1, 10000),
    "scales": _scales,
    "scale": _scale,
    "backbone": _layer_list,
    "head": _layer_list,
    "activation": _activation,
    "depth_multiple": lambda v, w: _positive(v, w, 4),
    "width_multiple": lambda v, w: _positive(v, w, 4),
    "end2end": _bool,
    "reg_max": lambda v, w: _int(v, w, 1, 64),
    "channels": lambda v, w: _int(v, w, 1, 64),
    "ch": lambda v, w: _int(v, w, 1, 64),
    "inplace": _bool,
    "yaml_file": _text,
}


def _check_layers(backbone: list, head: list, where: str):
    layers = backbone + head
    if not layers:
        raise UserError(f"{where}: the model yaml has no layers; copy the layout of a built-in detection yaml")
    checked = []
    for i, layer in enumerate(layers):
        part, j = ("backbone", i) if i < len(backbone) else ("head", i - len(backbone))
        what = f"{where}: {part}[{j}]"
        if not isinstance(layer, (list, tuple)) or len(layer) != 4:
            raise UserError(f"{what} must be [from, repeats, module, args], got {_short(layer)}")
        origin, repeats, module, args = layer
        checked.append([_check_from(origin, i, what), _int(repeats, f"{what} repeats", 1, MAX_REPEATS),
                        _check_module(module, i, i == len(layers) - 1, what), _check_args(args, what, 1)])
    return checked[:len(backbone)], checked[len(backbone):]


def _check_from(origin, i: int, what: str):
    # parse_model reads ch[f] (outputs of layers 0..i-1; the input for layer 0) and computes f % i.
    low, high = (-1, -1) if i == 0 else (-i, i - 1)
    items = origin if isinstance(origin, (list, tuple)) else [origin]
    if isinstance(origin, (list, tuple)) and not 1 <= len(origin) <= MAX_ARGS:
        raise UserError(f"{what} from must list 1 to {MAX_ARGS} earlier layers, got {_short(origin)}")
    checked = [_int(x, f"{what} from", low, high) for x in items]
    return checked if isinstance(origin, (list, tuple)) else checked[0]


def _check_module(module, i: int, last: bool, what: str) -> str:
    if last:
        if module not in DETECT_HEADS:
            raise UserError(f"{what}: the last layer {_short(module)} builds a {_head_task(module)} model; detection "
                            f"needs a {' or '.join(sorted(DETECT_HEADS))} head; use a detection yaml such as "
                            "yolov8n.yaml")
        return module
    if isinstance(module, str) and (module in LAYER_MODULES or module == "Silence" and i == 0  # v9 legacy name
                                    or module.startswith("nn.") and module[3:] in TORCH_NN_LAYERS):
        return module
    raise UserError(f"{what}: module {_short(module)} is not an allowed layer; use the layers of the built-in "
                    "detection yamls (Conv, C2f, C3k2, SPPF, Concat, nn.Upsample, ...; LAYER_MODULES in "
                    "src/tasks/detection/model_yaml.py)")


def _head_task(module) -> str:
    # the words ultralytics' guess_model_task reads off the head's name
    name = module.lower() if isinstance(module, str) else ""
    for word, task in (("rtdetr", "RT-DETR"), ("classif", "classify"), ("semanticsegment", "semantic"), ("segment", "segment"),
                       ("pose", "pose"), ("obb", "obb"), ("depth", "depth"), ("detect", "open-vocabulary detect")):
        if word in name:
            return task
    return "non-detection"


def _check_args(args, what: str, depth: int) -> list:
    if not isinstance(args, (list, tuple)) or len(args) > MAX_ARGS:
        raise UserError(f"{what} args must be a list of at most {MAX_ARGS} values, got {_short(args)}")
    out = []
    for a in args:
        if a is None or isinstance(a, bool):
            out.append(a)
        elif isinstance(a, int):
            out.append(_int(a, f"{what} arg", -MAX_INT, MAX_INT))
        elif isinstance(a, float):
            if not math.isfinite(a) or abs(a) > MAX_FLOAT:
                raise UserError(f"{what} arg {a!r} must be a finite number of at most {MAX_FLOAT:g}")
            out.append(a)
        elif isinstance(a, str):
            if a not in ARG_STRINGS:
                raise UserError(f"{what} arg {_short(a)} is not allowed; text args may only be "
                                f"{', '.join(sorted(ARG_STRINGS))}")
            out.append(a)
        elif isinstance(a, (list, tuple)) and depth < MAX_ARG_NESTING:
            out.append(_check_args(a, what, depth + 1))
        else:
            raise UserError(f"{what} arg {_short(a)} must be a number, true/false, null, one of "
                            f"{', '.join(sorted(ARG_STRINGS))} or a list of numbers")
    return out


def load_architecture_yaml(architecture) -> dict:
    """The checked model dict of `architecture` (a built-in name such as yolov8n.yaml or a yaml path).

    The same dict ultralytics' `yaml_model_load` builds (the file plus `scale` read off the name and
    `yaml_file`), read with our safe YAML loader and checked with check_model_yaml; nothing is downloaded.
    """
    from src.common.yaml_io import load_yaml

    name = str(architecture).strip()
    path = resolve_architecture(name)
    model_yaml = load_yaml(path)
    if not isinstance(model_yaml, dict):
        raise UserError(f"model yaml {path} holds a {type(model_yaml).__name__}, not a mapping; "
                        "use an ultralytics detection model yaml such as yolov8n.yaml")
    model_yaml = {**model_yaml, "scale": guess_scale(name), "yaml_file": str(_p6_name(name))}
    return check_model_yaml(model_yaml, str(path))


def resolve_architecture(architecture) -> Path:
    """The yaml file ultralytics would read for `architecture`: an existing path, else a bundled model yaml.

    Mirrors `yaml_model_load` -> `check_yaml` -> `check_file` (P6 and yolov5u renames, the scale-free
    `yolov8.yaml` for `yolov8n.yaml`), minus its downloads: URLs are refused.
    """
    name = str(architecture).strip()
    if not name.lower().endswith((".yaml", ".yml")):
        raise UserError(f"detection architecture must be an ultralytics model yaml such as yolo11n.yaml, got "
                        f"{name!r}; pass pretrained weights separately as weights")
    if "://" in name or name.lower().startswith(("http:", "https:", "ul:", "gs:")):
        raise UserError(f"detection architecture {name!r} is a URL; street-scene never downloads: give a local "
                        "yaml path or a built-in name such as yolov8n.yaml")
    if any(c in name for c in "*?["):
        raise UserError(f"detection architecture {name!r} contains a wildcard; give one yaml file")
    stem = Path(name).stem
    if "-world" in stem or "yoloe" in stem:  # YOLO() builds YOLOWorld/YOLOE (text models) for these names
        raise UserError(f"detection architecture {name!r}: names with '-world' or 'yoloe' select ultralytics' "
                        "open-vocabulary models; rename the file")
    path = _p6_name(name)
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", str(path))  # yolov8n.yaml -> yolov8.yaml
    for candidate in (str(path), unified):
        found = _find_yaml(_v5u_name(candidate))
        if found is not None:
            return found
    raise UserError(f"model yaml {name!r} not found: use a built-in name such as yolo11n.yaml or yolov8n.yaml, "
                    "or the path of an existing yaml")


def guess_scale(name: str) -> str:
    """The scale letter ultralytics reads off a model file name (guess_model_scale): yolov8s.yaml -> 's'."""
    match = re.search(r"yolo(e-)?[v]?\d+([nslmx])", Path(name).stem)
    return match.group(2) if match else ""


def _p6_name(name: str) -> Path:
    path = Path(name)
    if path.stem in (f"yolov{d}{x}6" for x in "nsmlx" for d in (5, 8)):  # yolov8n6 -> yolov8n-p6
        path = path.with_name(re.sub(r"(\d+)([nslmx])6(.+)?$", r"\1\2-p6\3", path.stem) + path.suffix)
    return path


def _v5u_name(name: str) -> str:
    if ("yolov3" in name or "yolov5" in name) and "u.yaml" in name:
        return name.replace("u.yaml", ".yaml")  # yolov5nu.yaml -> yolov5n.yaml
    return name


def _find_yaml(name: str):
    if os.path.exists(name):
        path = Path(name)
        if not path.is_file():
            raise UserError(f"model yaml {name} is a directory; give a yaml file")
        return path
    root = ultralytics_root()
    found = glob.glob(str(root / "**" / name), recursive=True) or glob.glob(str(root.parent / name))
    if len(found) > 1:
        raise UserError(f"model yaml {name!r} matches several bundled files ({', '.join(sorted(found))}); "
                        "give the path of one")
    return Path(found[0]) if found else None


def ultralytics_root() -> Path:
    """ultralytics' package folder, found without importing it (importing before configure_ultralytics() would
    let it probe the network)."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("ultralytics is not installed; install the pinned requirements")
    return Path(spec.submodule_search_locations[0])
