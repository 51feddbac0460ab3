"""src/common/config_schema.py and the task sections: the schema is the single source of keys and defaults, the
shipped YAMLs document every key of it (and nothing else), and bad values fail at load with one line."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from src.common.config_manager import ConfigManager
from src.common.config_schema import documented_keys
from src.common.dictdiff import flatten
from src.common.errors import UserError
from src.common.yaml_io import load_yaml
from src.tasks import TASKS, config_schema

REPO = Path(__file__).resolve().parents[1]
_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<rest>.*)$")


def _yaml_keys(path: Path):
    """{dotted key: comment} of every key line of a config file; subtask names become <*>."""
    stack, found = [], {}
    for line in path.read_text().splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        depth = len(m["indent"]) // 2
        stack = stack[:depth] + [m["key"]]
        parts = ["<*>" if i == 2 and stack[1] == "tasks" else p for i, p in enumerate(stack)]
        found[".".join(parts)] = m["rest"].split("#", 1)[1].strip() if "#" in m["rest"] else ""
    return found


@pytest.mark.parametrize("family", list(TASKS))
def test_every_schema_key_is_documented_in_the_shipped_yaml_and_vice_versa(family):
    path = REPO / "configs" / f"{family}_config.yaml"
    in_yaml = _yaml_keys(path)
    schema_keys = set(documented_keys(config_schema(family)))
    sections = {k for k in in_yaml if any(s.startswith(k + ".") for s in schema_keys)}
    assert set(in_yaml) - sections == schema_keys
    undocumented = sorted(k for k in schema_keys if not re.match(r"\(\S.*\) \S", in_yaml[k]))
    assert undocumented == [], f"keys without a '(type) meaning' comment in {path.name}"


@pytest.mark.parametrize("family", list(TASKS))
def test_shipped_yaml_values_are_the_schema_defaults(family):
    path = REPO / "configs" / f"{family}_config.yaml"
    raw = load_yaml(path)
    filled = ConfigManager(path).get_config()
    assert flatten(filled) == flatten(raw), "the shipped YAML must spell out every default"
    tasks = raw[family].pop("tasks")
    defaults = config_schema(family).model_validate({family: {"tasks": tasks}}).model_dump()
    assert flatten(defaults) == flatten({**raw, family: {**raw[family], "tasks": tasks}})


def test_schema_modules_do_not_import_torch():
    code = ("import sys\nfrom src.common.config_manager import ConfigManager\n"
            "ConfigManager('configs/detection_config.yaml'); ConfigManager('configs/segmentation_config.yaml')\n"
            "assert 'torch' not in sys.modules and 'ultralytics' not in sys.modules, 'imported torch'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_family_is_inferred_and_checked_against_task(tmp_path):
    seg = REPO / "configs" / "segmentation_config.yaml"
    assert ConfigManager(seg).task == "segmentation"
    with pytest.raises(UserError, match="is a segmentation config .* but --task is detection"):
        ConfigManager(seg, task="detection")
    both = tmp_path / "both.yaml"
    both.write_text("detection: {tasks: {a: {classes: [x]}}}\nsegmentation: {tasks: {b: {classes: [y]}}}\n")
    with pytest.raises(UserError, match="sections for detection and segmentation"):
        ConfigManager(both)
    with pytest.raises(UserError, match="has a `segmentation:` section, which a --task detection run does not use"):
        ConfigManager(both, task="detection")


def test_alias_bomb_config_is_refused_fast(tmp_path):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join(f"*{prev}" for _ in range(9)) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 700  # expands to 9**9 (387 million) strings
    import time

    start = time.perf_counter()
    with pytest.raises(UserError, match="expands its aliases"):
        ConfigManager(path)
    assert time.perf_counter() - start < 1.0


def test_merge_keys_still_work(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("detection:\n  tasks:\n    a: &a {classes: [car, bus]}\n    b:\n      <<: *a\n")
    assert ConfigManager(path).get("detection.tasks.b.classes") == ["car", "bus"]


def test_oversized_yaml_is_refused(tmp_path, monkeypatch):
    import src.common.yaml_io as yaml_io

    monkeypatch.setattr(yaml_io, "MAX_YAML_BYTES", 100)
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * 200 + "\n" + "detection: {tasks: {a: {classes: [x]}}}\n")
    with pytest.raises(UserError, match="limited to 100 bytes"):
        ConfigManager(path)


def test_subtask_added_in_config_is_a_choice(tmp_path):
    from src.pipelines.job import open_job

    job = open_job(REPO / "configs" / "segmentation_config.yaml", "segmentation", "highway_segmentation",
                   ['+segmentation.tasks.highway_segmentation={"classes": ["road", "car"]}'])
    assert job.subtask == "highway_segmentation"
    with pytest.raises(UserError, match="unknown subtask 'nope' for --task segmentation; choose one of "
                                        "road_scene_segmentation"):
        open_job(REPO / "configs" / "segmentation_config.yaml", "segmentation", "nope")


@pytest.mark.parametrize("name", ["1abc", "has space", "dash-ed", "a" * 70, "x.y"])
def test_subtask_names_are_identifiers(tmp_path, name):
    path = tmp_path / "c.yaml"
    path.write_text(f"detection:\n  tasks:\n    '{name}': {{classes: [car]}}\n")
    with pytest.raises(UserError, match=r"detection.tasks: key .* must start with a letter"):
        ConfigManager(path)
