"""Every string in a real detection checkpoint, turned into code, through every path that loads one.

A checkpoint is data (`torch.load(weights_only=True)`), but ultralytics evaluates strings of the model description
it is rebuilt from. Each string value and each string key of a real checkpoint (model_spec, the model yaml's
layers, config, metadata, ...) is replaced by a code payload, saved with torch.save and loaded through
load_checkpoint + build_model and through load_pretrained: each must work (the string was harmless data) or raise
UserError, and the payloads' marker file must never appear.

The bulk uses a real checkpoint of a small custom architecture (yolov8's layers at width 1/16, built through the
custom-architecture path) so the ~250 saves and ~500 loads stay fast; the CLI case uses yolov8n with the reported
exploit.
"""

import copy
from pathlib import Path

import pytest
import torch
import yaml

from src.common.errors import UserError
from tests.detection_e2e_support import (CONFIG, VEHICLE_CLASSES, VEHICLE_YAML, assert_user_error, make_data,
                                         workspace_env)
from tests.helpers import run_script

EXPLOIT = "nn.SiLU() if __import__('os').system('touch PWNED')==0 else nn.SiLU()"


def payloads(marker: Path) -> list:
    m = str(marker)
    return [
        f"__import__('os').system('touch {m}')",
        f"nn.SiLU() if __import__('os').system('touch {m}')==0 else nn.SiLU()",
        f"exec(\"open({m!r}, 'w').close()\")",
        f"(lambda: open({m!r}, 'w'))()",
        "globals()",
        "torch_load",  # a callable in parse_model's globals(): a layer name it would call
    ]


class Key(str):
    """A path step that renames the dict key itself (rather than replacing its value)."""


def string_sites(obj, path=()):
    """Paths to every string value and string dict key in `obj`."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(key, str):
                yield path + (Key(key),)
            yield from string_sites(value, path + (key,))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from string_sites(value, path + (i,))
    elif isinstance(obj, str):
        yield path


def mutated(ckpt: dict, sites, payload: str) -> dict:
    """A copy of `ckpt` with every site replaced by `payload` (renamed keys get a ` # n` comment: keys stay unique)."""
    out = copy.deepcopy({k: v for k, v in ckpt.items() if k != "model_state"})
    out["model_state"] = dict(ckpt["model_state"])  # the same tensors; only their names may change
    for n, site in enumerate(sorted(sites, key=len, reverse=True)):  # deepest first: renames can't hide paths
        parent = out
        for step in site[:-1]:
            parent = parent[step]
        if isinstance(site[-1], Key):
            parent[payload if len(sites) == 1 else f"{payload} # {n}"] = parent.pop(str(site[-1]))
        else:
            parent[site[-1]] = payload
    return out




def real_checkpoint(architecture: str) -> dict:
    """What the detection task saves after an epoch: our build_checkpoint over an untrained model."""
    from ultralytics.nn.tasks import DetectionModel

    from src.common.checkpoint import build_checkpoint
    from src.common.config_manager import compute_config_hash
    from src.common.yaml_io import load_yaml
    from src.tasks.detection.weights import build_untrained_yolo, fp32_cpu_state, plain_data

    yolo = build_untrained_yolo(architecture)
    module = DetectionModel(copy.deepcopy(yolo.model.yaml), nc=len(VEHICLE_CLASSES), verbose=False)
    spec = {"architecture": architecture, "model_yaml": plain_data(module.yaml), "names": list(VEHICLE_CLASSES),
            "imgsz": 64}
    config = load_yaml(CONFIG)
    metadata = {"run_id": "20240115_143022_vehicles", "status": "completed", "command": "scripts/train.py --task "
                "detection", "git": {"commit": "7d60a29", "branch": "main", "dirty": False},
                "versions": {"python": "3.11.9", "torch": "2.14.1", "ultralytics": "8.4.190"}}
    return build_checkpoint(task="detection", subtask="vehicle_detection", model_state=fp32_cpu_state(module),
                            model_spec=spec, epoch=1, metrics={"val/mAP50": 0.0, "val/mAP50-95": 0.0},
                            config=config, config_hash=compute_config_hash(config), metadata=metadata)


@pytest.fixture(scope="module")
def small_ckpt(offline, tmp_path_factory):
    folder = tmp_path_factory.mktemp("arch")
    layout = yaml.safe_load((Path(__import__("ultralytics").__file__).parent / "cfg/models/v8/yolov8.yaml")
                            .read_text())
    layout["scales"] = {"n": [0.33, 0.0625, 256]}
    layout["activation"] = "nn.SiLU()"  # one more string the builder reads
    (folder / "tiny_yolov8n.yaml").write_text(yaml.safe_dump(layout))
    return real_checkpoint(str(folder / "tiny_yolov8n.yaml"))


HARMLESS_SPEC = ("architecture", "names", "yaml_file")  # strings the builders only record, never interpret


def _cases(ckpt: dict, payloads: list):
    """(label, sites, payload, refused): which strings to replace together, and whether loading must refuse.

    Each model_spec string on its own, with the reported exploit and with one more payload in turn (the builder
    reads each of them); the strings the builder only records (architecture, class names, yaml_file, config,
    metadata, metrics, ...) all at once with every payload; top-level keys and weight names in turn.
    """
    sites = list(string_sites(ckpt["model_spec"], ("model_spec",)))
    recorded = [s for s in sites if not isinstance(s[-1], Key) and any(step in HARMLESS_SPEC for step in s)]
    spec = [s for s in sites if s not in recorded]  # incl. renamed keys: a spec without 'names' is refused
    harmless = list(recorded)
    harmless += [s for s in string_sites({k: v for k, v in ckpt.items() if k not in ("model_spec", "model_state")})
                 if len(s) > 1]
    assert len(spec) >= 40 and len(harmless) > 20, (len(spec), len(harmless))
    top = [(Key(k),) for k in ckpt if k not in ("model_spec", "model_state")]
    state = sorted(ckpt["model_state"])
    cases = []
    for i, site in enumerate(spec):
        for payload in (payloads[1], payloads[i % len(payloads)]):
            cases.append((repr(site), [site], payload, {"checkpoint": True, "pretrained": True}))
    for i, payload in enumerate(payloads):
        cases.append(("recorded strings", harmless, payload, {"checkpoint": False, "pretrained": False}))
    rotate = iter(payloads * 2)
    cases += [("top-level keys", top, next(rotate), {"checkpoint": True, "pretrained": False}),
              ("model_spec key", [(Key("model_spec"),)], next(rotate), {"checkpoint": True, "pretrained": True}),
              ("model_state key", [(Key("model_state"),)], next(rotate), {"checkpoint": True, "pretrained": True}),
              ("weight names", [("model_state", Key(state[i])) for i in (0, len(state) // 2, -1)], next(rotate),
               {"checkpoint": True, "pretrained": True})]
    return cases


def test_every_string_becomes_a_payload_and_nothing_runs(small_ckpt, tmp_path):
    from src.common.checkpoint import load_checkpoint
    from src.tasks.detection.weights import build_model, load_pretrained

    marker = tmp_path / "PWNED"
    path = tmp_path / "case.pth"
    for label, sites, payload, refused in _cases(small_ckpt, payloads(marker)):
        torch.save(mutated(small_ckpt, sites, payload), path)
        for loader in ("checkpoint", "pretrained"):
            try:
                if loader == "checkpoint":
                    ckpt = load_checkpoint(path)
                    build_model(ckpt["model_spec"], ckpt["model_state"], where=str(path))
                else:
                    load_pretrained(path)
                outcome = False
            except UserError as e:
                assert "\n" not in str(e)
                outcome = True
            assert not marker.exists(), (label, loader, payload)
            assert outcome == refused[loader], (label, loader, payload)


def test_exploit_through_evaluate_cli_exits_2_and_runs_nothing(offline, tmp_path):
    from src.common.checkpoint import save_checkpoint

    ckpt = real_checkpoint("yolov8n.yaml")
    ckpt["model_spec"]["model_yaml"]["activation"] = EXPLOIT
    ws = tmp_path / "ws"
    ws.mkdir()
    save_checkpoint(ws / "evil.pth", ckpt)
    data = make_data(ws / "data", n_train=1, n_val=1, n_test=2)
    proc = run_script("evaluate.py", "--config", CONFIG, "--task", "detection", "--detection-task",
                      "vehicle_detection", "--test-data", data / "test", "--checkpoint", ws / "evil.pth",
                      "--data-yaml", VEHICLE_YAML, cwd=ws, env=workspace_env(ws), timeout=300)
    assert_user_error(proc, r"model_spec\.model_yaml: 'activation' must be written like nn\.SiLU\(\)")
    assert not (ws / "PWNED").exists()
