"""Model descriptions are data: the allow-list in src/tasks/detection/model_yaml.py and the guarded builders.

ultralytics' parse_model eval()s a model dict's `activation` and looks layer names up in its module globals; a
checkpoint or a custom architecture yaml must never get that far with anything but allow-listed values.
"""

import copy
import glob
from pathlib import Path

import pytest
import yaml

from src.common.errors import UserError
from src.tasks.detection import model_yaml as my
from src.tasks.detection.model_yaml import check_model_yaml, load_architecture_yaml

EXPLOIT = "nn.SiLU() if __import__('os').system('touch PWNED')==0 else nn.SiLU()"


def _bundled_detect_yamls():
    root = my.ultralytics_root() / "cfg" / "models"
    found = []
    for path in sorted(glob.glob(str(root / "**" / "*.yaml"), recursive=True)):
        d = yaml.safe_load(Path(path).read_text())
        if d["head"][-1][2] in ("Detect", "v10Detect"):
            found.append(Path(path))
    return found


BUNDLED = _bundled_detect_yamls()




@pytest.fixture
def v8n():
    """yolov8n.yaml as ultralytics' yaml_model_load returns it, plus the keys a trained model's yaml gains."""
    d = yaml.safe_load((my.ultralytics_root() / "cfg" / "models" / "v8" / "yolov8.yaml").read_text())
    return {**d, "scale": "n", "yaml_file": "yolov8n.yaml", "channels": 3}


def _refused(model_yaml, pattern=None):
    with pytest.raises(UserError) as err:
        check_model_yaml(model_yaml, "ckpt.pth")
    message = str(err.value)
    assert "\n" not in message and message.startswith("ckpt.pth"), message
    if pattern:
        assert pattern in message, message
    return message


# --- what passes -------------------------------------------------------------------------------------------------

def test_the_v8_11_26_families_are_among_the_bundled_detect_yamls():
    names = {p.name for p in BUNDLED}
    assert {"yolov8.yaml", "yolo11.yaml", "yolo26.yaml", "yolov10n.yaml", "yolov9t.yaml", "yolov6.yaml"} <= names
    assert len(BUNDLED) >= 25


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_every_bundled_detect_yaml_passes(path):
    d = yaml.safe_load(path.read_text())
    assert check_model_yaml(d, str(path)) == d  # a plain copy, equal to the input


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolov8s.yaml", "yolo11n.yaml", "yolo26n.yaml", "yolov10n.yaml",
                                  "yolov9t.yaml", "yolov6n.yaml", "yolov3-tiny.yaml", "yolov8n-p2.yaml",
                                  "yolov5nu.yaml", "yolov8n6.yaml"])
def test_builtin_names_resolve_like_ultralytics_without_importing_it(name, offline):
    from ultralytics.nn.tasks import yaml_model_load

    assert load_architecture_yaml(name) == yaml_model_load(name)  # same file, same scale and yaml_file


def test_scale_comes_from_the_name():
    assert load_architecture_yaml("yolov8s.yaml")["scale"] == "s"
    assert load_architecture_yaml("yolov8.yaml")["scale"] == ""


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml", "yolov6n.yaml", "yolov9t.yaml",
                                  "yolov10n.yaml", "yolov3-tiny.yaml"])
def test_build_untrained_yolo_builds_the_bundled_families(name, offline):
    from src.tasks.detection.weights import build_untrained_yolo

    yolo = build_untrained_yolo(name)
    assert yolo.task == "detect" and type(yolo.model).__name__ == "DetectionModel"
    assert yolo.model.yaml["yaml_file"] == name


def test_a_custom_architecture_file_is_read_with_our_loader_and_built(tmp_path, offline, v8n):
    from src.tasks.detection.weights import build_untrained_yolo

    custom = {k: v for k, v in v8n.items() if k not in ("scale", "yaml_file", "channels")}
    custom["activation"] = "nn.LeakyReLU(0.1)"
    path = tmp_path / "my_yolov8n.yaml"
    path.write_text(yaml.safe_dump(custom))
    assert load_architecture_yaml(path)["yaml_file"] == str(path)
    yolo = build_untrained_yolo(str(path))
    assert yolo.model.yaml["activation"] == "nn.LeakyReLU(0.1)"
    acts = {type(m.act).__name__ for m in yolo.model.modules() if hasattr(m, "act")}
    assert "LeakyReLU" in acts and "SiLU" not in acts


def test_pre_8_1_checkpoint_yaml_with_ch_passes(v8n):
    legacy = {k: v for k, v in v8n.items() if k != "channels"}
    assert check_model_yaml({**legacy, "ch": 3}, "old.pt")["ch"] == 3


# --- the allow-list names what ultralytics really has ------------------------------------------------------------

def test_allow_listed_layers_exist_in_ultralytics(offline):
    import torch
    from ultralytics.nn import modules, tasks

    for name in my.LAYER_MODULES | my.DETECT_HEADS:
        cls = vars(tasks).get(name)  # parse_model's globals()[name]
        assert isinstance(cls, type) and issubclass(cls, torch.nn.Module), name
        assert getattr(modules, name) is cls, name
    for name in my.TORCH_NN_LAYERS:
        assert issubclass(getattr(torch.nn, name), torch.nn.Module), name


@pytest.mark.parametrize("name", sorted(my.ACTIVATIONS))
def test_allow_listed_activations_build_without_eval(name, offline):
    import torch
    from ultralytics.nn.tasks import _SafeLoad

    act = check_model_yaml({"nc": 1, "backbone": [[-1, 1, "Conv", [16, 3, 2]]], "head": [[-1, 1, "Detect", ["nc"]]],
                            "activation": f"nn.{name}()"}, "x")["activation"]
    assert isinstance(_SafeLoad.activation(act), getattr(torch.nn, name))


# --- what is refused ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("act", [
    EXPLOIT, "__import__('os').system('touch PWNED')", "nn.SiLU(); import os", "nn.SiLU()\n", " nn.SiLU()",
    "nn.Module()", "nn.Sequential()", "nn.functional.relu()", "nn.PReLU(99999999)", "torch.relu()",
    "nn.SiLU(inplace=__import__('os'))", "nn.LeakyReLU(x)", "nn.LeakyReLU(0.1, 0.2, 0.3)", "eval('nn.SiLU()')",
    "lambda: nn.SiLU()", "nn.SiLU", "", 1, None, ["nn.SiLU()"],
])
def test_activation_must_be_a_plain_nn_call(v8n, act):
    _refused({**v8n, "activation": act}, "'activation'")


@pytest.mark.parametrize("module", [
    "torch_load", "check_requirements", "check_file", "eval", "exec", "globals", "__builtins__", "importlib",
    "nn.Module", "nn.functional", "nn.modules", "nn.Sequential", "torch.nn.Upsample", "torchvision.ops.nms",
    "TorchVision", "Index", "Classify", "Segment", "WorldDetect", "RTDETRDecoder", "C2fAttn", "Silence",
    "Conv()", "", 3, None, ["Conv"],
])
def test_layer_modules_come_from_the_allow_list(v8n, module):
    v8n["backbone"][1][2] = module
    _refused(v8n, "backbone[1]")


@pytest.mark.parametrize("head", ["Segment", "Classify", "Conv", "RTDETRDecoder", "YOLOEDetect", "v10Detect()"])
def test_last_layer_must_be_a_detect_head(v8n, head):
    v8n["head"][-1][2] = head
    _refused(v8n, "detection needs a")


@pytest.mark.parametrize("name,task", [("yolo11n-seg.yaml", "segment"), ("yolov8n-pose.yaml", "pose"),
                                       ("yolov8n-cls.yaml", "classify"), ("rtdetr-l.yaml", "RT-DETR")])
def test_other_tasks_are_named(name, task):
    with pytest.raises(UserError, match=f"builds a {task} model; detection needs a Detect or v10Detect head"):
        load_architecture_yaml(name)


@pytest.mark.parametrize("arg", [
    "__import__('os').system('touch PWNED')", "d", "ch", "locals", "kpt_shape", "resnet18", "DEFAULT", "1+1",
    "[1]*10**9", float("nan"), float("inf"), 10**6, 1e30, {"a": 1}, b"x", [[[1]]], [1] * 17,
])
def test_args_are_numbers_lists_and_a_few_words(v8n, arg):
    v8n["backbone"][0][3] = [16, arg]
    _refused(v8n, "backbone[0] arg")


def test_too_many_args_refused(v8n):
    v8n["backbone"][0][3] = [16] * 17
    _refused(v8n, "backbone[0] args")


@pytest.mark.parametrize("origin,index", [(0, 0), (1, 0), (-2, 0), (5, 3), (-5, 3), ("-1", 3), (True, 3),
                                          ([], 3), ([-1, 99], 3), ([-1] * 17, 3), (1.0, 3)])
def test_from_must_name_an_earlier_layer(v8n, origin, index):
    v8n["backbone"][index][0] = origin
    _refused(v8n, f"backbone[{index}]")


@pytest.mark.parametrize("repeats", [0, -1, 65, True, "3", 2.0, None])
def test_repeats_are_small_integers(v8n, repeats):
    v8n["backbone"][2][1] = repeats
    _refused(v8n, "repeats")


@pytest.mark.parametrize("layer", [[-1, 1, "Conv"], [-1, 1, "Conv", [16], "extra"], "Conv", None, {"from": -1}])
def test_layers_have_four_fields(v8n, layer):
    v8n["backbone"][1] = layer
    _refused(v8n, "[from, repeats, module, args]")


@pytest.mark.parametrize("change,pattern", [
    ({"text_model": "mobileclip:blt"}, "unknown model yaml keys"),
    ({"__class__": 1}, "unknown model yaml keys"),
    ({1: 2}, "unknown model yaml keys"),
    ({"nc": 0}, "'nc'"), ({"nc": True}, "'nc'"), ({"nc": "80"}, "'nc'"), ({"nc": 10**9}, "'nc'"),
    ({"scale": "z"}, "not one of the yaml's scales"),
    ({"scale": "__import__('os')"}, "'scale'"),
    ({"scales": {"n": [0.33, 0.25]}}, "'scales'"),
    ({"scales": {"n": [0.33, 1e9, 1024]}}, "'scales'"),
    ({"scales": {"n": [0.33, 0.25, 10**9]}}, "'scales'"),
    ({"scales": {"__import__('os')": [0.33, 0.25, 1024]}}, "'scales'"),
    ({"scales": "n"}, "'scales'"),
    ({"depth_multiple": float("nan")}, "'depth_multiple'"), ({"width_multiple": 100}, "'width_multiple'"),
    ({"reg_max": 10**6}, "'reg_max'"), ({"end2end": "yes"}, "'end2end'"), ({"channels": 10**6}, "'channels'"),
    ({"inplace": 1}, "'inplace'"), ({"yaml_file": "a\x00b"}, "'yaml_file'"), ({"yaml_file": "x" * 5000}, "'yaml_file'"),
    ({"backbone": "Conv"}, "'backbone'"), ({"head": [[-1, 1, "Conv", [16]]] * 600 + [[-1, 1, "Detect", ["nc"]]]}, "'head'"),
])
def test_top_level_values_are_checked(v8n, change, pattern):
    _refused({**v8n, **change}, pattern)


@pytest.mark.parametrize("key", ["nc", "backbone", "head"])
def test_required_keys(v8n, key):
    del v8n[key]
    _refused(v8n, f"no '{key}'")


@pytest.mark.parametrize("value", [None, [], "nn.SiLU()", 3])
def test_a_model_yaml_is_a_mapping(value):
    _refused(value, "not a mapping")


def test_deep_nesting_is_refused_without_recursing(v8n):
    deep = [1]
    for _ in range(10000):  # deeper than Python's recursion limit
        deep = [deep]
    v8n["backbone"][0][3] = deep
    _refused(v8n, "backbone[0] arg")


def test_the_checked_copy_is_independent(v8n):
    checked = check_model_yaml(v8n, "x")
    checked["backbone"][0][3].append(99)
    assert v8n["backbone"][0][3] == [64, 3, 2]


# --- architecture names and files ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,pattern", [
    ("https://example.com/yolov8n.yaml", "is a URL"), ("ul://user/project/model.yaml", "is a URL"),
    ("yolov8n.pt", "must be an ultralytics model yaml"), ("yolo*.yaml", "wildcard"),
    ("yolov8s-world.yaml", "open-vocabulary"), ("yoloe-11s.yaml", "open-vocabulary"),
    ("no_such_model.yaml", "not found"), ("yolov8n-seg.yaml", "detection needs a"),
    ("yolov8n-cls.yaml", "detection needs a"), ("rtdetr-l.yaml", "detection needs a"),
])
def test_architecture_names_refused(name, pattern):
    with pytest.raises(UserError, match=pattern):
        load_architecture_yaml(name)


def test_custom_yaml_with_the_exploit_is_refused_and_never_run(tmp_path, monkeypatch, offline, v8n):
    from src.tasks.detection.weights import build_untrained_yolo

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump({**v8n, "activation": EXPLOIT}))
    with pytest.raises(UserError, match="evil.yaml: 'activation' must be written like nn.SiLU"):
        build_untrained_yolo(str(path))
    assert not (tmp_path / "PWNED").exists()


def test_custom_yaml_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("nc: 1\nnc: 2\n")
    with pytest.raises(UserError, match=r"dup\.yaml.*duplicate key"):
        load_architecture_yaml(path)
    path.write_text("- 1\n")
    with pytest.raises(UserError, match="not a mapping"):
        load_architecture_yaml(path)
    (tmp_path / "d.yaml").mkdir()
    with pytest.raises(UserError, match="is a directory"):
        load_architecture_yaml(tmp_path / "d.yaml")


# --- the exploit through the checkpoint paths ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spec_and_state(offline):
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    from src.tasks.detection.weights import fp32_cpu_state, plain_data

    module = DetectionModel(yaml_model_load("yolov8n.yaml"), nc=2, verbose=False)
    spec = {"architecture": "yolov8n.yaml", "model_yaml": plain_data(module.yaml), "names": ["car", "bus"],
            "imgsz": 64}
    return spec, fp32_cpu_state(module)


def test_build_model_rebuilds_a_checked_spec(spec_and_state):
    from src.tasks.detection.weights import build_model

    spec, state = spec_and_state
    yolo = build_model(copy.deepcopy(spec), state)
    assert yolo.model.names == {0: "car", 1: "bus"} and yolo.task == "detect"


def test_build_model_refuses_the_exploit_and_runs_nothing(spec_and_state, tmp_path, monkeypatch):
    from src.tasks.detection.weights import build_model

    monkeypatch.chdir(tmp_path)
    spec, state = spec_and_state
    evil = copy.deepcopy(spec)
    evil["model_yaml"]["activation"] = EXPLOIT
    with pytest.raises(UserError, match=r"^ckpt\.pth: model_spec\.model_yaml: 'activation' must be written"):
        build_model(evil, state, where="ckpt.pth")
    assert not (tmp_path / "PWNED").exists()


def test_load_pretrained_refuses_the_exploit(spec_and_state, tmp_path, monkeypatch):
    import torch

    from src.tasks.detection.weights import load_pretrained

    monkeypatch.chdir(tmp_path)
    spec, state = spec_and_state
    evil = copy.deepcopy(spec)
    evil["model_yaml"]["activation"] = EXPLOIT
    torch.save({"model_state": state, "model_spec": evil}, tmp_path / "w.pth")
    with pytest.raises(UserError, match="pretrained weights .*w.pth: model_spec.model_yaml: 'activation'"):
        load_pretrained(tmp_path / "w.pth")
    assert not (tmp_path / "PWNED").exists()


def test_no_eval_parsing_is_a_second_guard(tmp_path, monkeypatch, offline):
    """Even a dict that skipped the allow-list is built without eval() inside no_eval_model_parsing()."""
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    from src.tasks.detection.weights import no_eval_model_parsing

    monkeypatch.chdir(tmp_path)
    d = yaml_model_load("yolov8n.yaml")
    with no_eval_model_parsing(), pytest.raises(TypeError, match="unsupported activation"):
        DetectionModel({**d, "activation": EXPLOIT}, verbose=False)
    assert not (tmp_path / "PWNED").exists()


def test_spec_problems_are_user_errors(spec_and_state):
    from src.tasks.detection.weights import build_model

    spec, state = spec_and_state
    for bad, pattern in [({**spec, "names": "car"}, "names"), ({**spec, "names": []}, "names"),
                         ({**spec, "imgsz": "64"}, "imgsz"), ({k: v for k, v in spec.items() if k != "imgsz"},
                                                             "lacks imgsz"), ("spec", "not a mapping")]:
        with pytest.raises(UserError, match=pattern):
            build_model(bad, state)


def test_an_allowed_but_inconsistent_yaml_is_a_user_error(spec_and_state):
    from src.tasks.detection.weights import build_model

    spec, state = spec_and_state
    bad = copy.deepcopy(spec)
    bad["model_yaml"]["head"][1] = [[-1, 0], 1, "Concat", [1]]  # joins a stride-32 map with the stride-2 input conv
    with pytest.raises(UserError, match="does not build a model"):
        build_model(bad, state)


def _ultralytics_pt(path: Path, activation=None) -> Path:
    """An ultralytics-style .pt (a pickled DetectionModel, as in its best.pt) whose yaml may carry `activation`."""
    import torch
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    module = DetectionModel(yaml_model_load("yolov8n.yaml"), nc=2, verbose=False)
    if activation is not None:
        module.yaml["activation"] = activation  # what a tampered file would carry; the module itself is untouched
    torch.save({"model": module, "train_args": {"imgsz": 64}}, path)
    return path


def test_ultralytics_pt_with_a_hostile_yaml_is_refused(tmp_path, monkeypatch, offline):
    from src.tasks.detection.weights import load_pretrained

    monkeypatch.chdir(tmp_path)
    assert type(load_pretrained(_ultralytics_pt(tmp_path / "ok.pt"))).__name__ == "DetectionModel"
    with pytest.raises(UserError, match=r"evil\.pt: model yaml: 'activation' must be written"):
        load_pretrained(_ultralytics_pt(tmp_path / "evil.pt", EXPLOIT))
    assert not (tmp_path / "PWNED").exists()


def test_legacy_checkpoint_with_a_hostile_yaml_is_refused(tmp_path, offline):
    import torch

    from src.tasks.detection.weights import legacy_checkpoint

    obj = torch.load(_ultralytics_pt(tmp_path / "old.pt"), map_location="cpu", weights_only=False)
    model = legacy_checkpoint(obj, tmp_path / "old.pt")
    assert model["model_spec"]["names"] == ["0", "1"] and model["model_spec"]["imgsz"] == 64
    obj["model"].yaml["backbone"][0][2] = "torch_load"
    with pytest.raises(UserError, match=r"old\.pt: model yaml: backbone\[0\]: module 'torch_load'"):
        legacy_checkpoint(obj, tmp_path / "old.pt")
