"""src/common/config_manager.py (and dictdiff): loading, overrides, validation, hashing, diffs."""

import copy
import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from src.common.config_manager import (
    ConfigManager, apply_overrides, compute_config_hash, parse_override, parse_override_value,
)
from src.common.dictdiff import MISSING, diff_dicts, flatten, format_changes
from src.common.errors import UserError
from src.common.yaml_io import dump_yaml

REPO = Path(__file__).resolve().parents[1]
DETECTION_CONFIG = REPO / "configs" / "detection_config.yaml"
HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def _no_seed_env(monkeypatch):
    monkeypatch.delenv("STREET_SCENE_SEED", raising=False)


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = "detection:\n  tasks:\n    cars: {classes: [car]}\n"


def minimal(tmp_path, text="", name="config.yaml"):
    """The smallest valid config (one detection subtask) plus `text` (YAML merged in by hand)."""
    return write(tmp_path, text + MINIMAL if "detection:" not in text else text, name)


def training(tmp_path, body, name="config.yaml"):
    """A valid config whose detection.training section is `body` (indented YAML)."""
    return write(tmp_path, f"detection:\n  training:\n{body}  tasks:\n    cars: {{classes: [car]}}\n", name)


# ---------------------------------------------------------------- loading


def test_guide_api_on_the_shipped_config():
    cm = ConfigManager(DETECTION_CONFIG)
    config = cm.get_config()
    assert isinstance(config, dict)
    assert config["detection"]["training"]["learning_rate"] == 0.01
    assert config["seed"] == 42
    assert re.fullmatch(r"[0-9a-f]{8}", cm.get_config_hash())
    assert re.fullmatch(r"[0-9a-f]{64}", cm.get_config_sha256())
    assert cm.get_config_sha256().startswith(cm.get_config_hash())


def test_get_config_is_a_copy():
    cm = ConfigManager(DETECTION_CONFIG)
    before = cm.get_config_hash()
    cm.get_config()["detection"]["training"]["epochs"] = 999
    nested = cm.get("detection.training")
    nested["epochs"] = 999
    assert cm.get("detection.training.epochs") == 20
    assert cm.get_config_hash() == before


def test_get_dotted_key_and_default():
    cm = ConfigManager(DETECTION_CONFIG)
    assert cm.get("detection.training.optimizer") == "SGD"
    assert cm.get("detection.nope", "dflt") == "dflt"
    assert cm.get("seed.deeper") is None


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        ConfigManager(tmp_path / "nope.yaml")


def test_malformed_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "seed: 1\ndetection:\n  lr: [0.1\n  epochs: 3\n")
    with pytest.raises(UserError, match=r"invalid YAML in .*config\.yaml, line \d+"):
        ConfigManager(path)


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just a string\n", "str"), ("42\n", "int")])
def test_config_must_be_a_mapping(tmp_path, text, kind):
    with pytest.raises(UserError, match=f"must be a YAML mapping.*not {kind}"):
        ConfigManager(write(tmp_path, text))


def test_empty_config_names_what_it_lacks(tmp_path):
    with pytest.raises(UserError, match=r"config .*config\.yaml has no task section"):
        ConfigManager(write(tmp_path, "# nothing yet\n"))


def test_minimal_config_gets_every_default(tmp_path):
    cm = ConfigManager(minimal(tmp_path))
    shipped = ConfigManager(DETECTION_CONFIG).get_config()
    shipped["detection"]["tasks"] = {"cars": {"classes": ["car"]}}
    assert cm.get_config() == shipped
    assert cm.seed_source == "default"
    assert cm.task == "detection"


def test_learning_rate_1e_4_is_a_float(tmp_path):
    cm = ConfigManager(training(tmp_path, "    learning_rate: 1e-4\n"))
    assert cm.get("detection.training.learning_rate") == pytest.approx(1e-4)
    assert isinstance(cm.get("detection.training.learning_rate"), float)


@pytest.mark.parametrize("text", ["    weights: !!binary aGVsbG8=\n", "    weights: !!set {a, b}\n"])
def test_values_the_hash_cannot_cover_fail_at_load(tmp_path, text):
    path = write(tmp_path, "detection:\n  model:\n" + text + "  tasks:\n    cars: {classes: [car]}\n")
    with pytest.raises(UserError, match="detection.model.weights must be a valid string"):
        ConfigManager(path)


# ---------------------------------------------------------------- hashing


def test_hash_ignores_key_order_and_spelling(tmp_path):
    a = write(tmp_path, "seed: 1\ndetection:\n  training: {learning_rate: 0.001, epochs: 3}\n"
                        "  tasks: {cars: {classes: [car]}}\n", "a.yaml")
    b = write(tmp_path, "detection:\n  tasks: {cars: {classes: [car]}}\n  training:\n    epochs: 3\n"
                        "    learning_rate: 1e-3\nseed: 1\n", "b.yaml")
    c = write(tmp_path, "detection: {training: {learning_rate: 1.0e-03, epochs: 3}, tasks: {cars: {classes: [car]}}}"
                        "\nseed: 1\n", "c.yaml")
    hashes = {ConfigManager(p).get_config_hash() for p in (a, b, c)}
    assert len(hashes) == 1


def test_hash_ignores_tracking_section_only(tmp_path):
    def cm(lr, experiment, name):
        return ConfigManager(write(tmp_path, f"detection:\n  training: {{learning_rate: {lr}}}\n  tasks: {{c: "
                                             f"{{classes: [car]}}}}\ntracking:\n  mlflow: {{experiment: {experiment}}}\n",
                                   name)).get_config_hash()

    assert cm(0.1, "a", "a.yaml") == cm(0.1, "b", "b.yaml") != cm(0.2, "a", "c.yaml")


def test_hash_covers_defaults_filled_in(tmp_path):
    """A key left out of the file is its default: writing the default out does not change the hash."""
    left_out = ConfigManager(minimal(tmp_path, name="a.yaml")).get_config_hash()
    written = ConfigManager(training(tmp_path, "    warmup_epochs: 1.0\n", "b.yaml")).get_config_hash()
    changed = ConfigManager(training(tmp_path, "    warmup_epochs: 3.0\n", "c.yaml")).get_config_hash()
    assert left_out == written != changed


def test_hash_covers_the_resolved_seed(tmp_path):
    path = minimal(tmp_path)
    assert ConfigManager(path, seed=1).get_config_hash() != ConfigManager(path, seed=2).get_config_hash()


def test_hash_distinguishes_types_that_matter():
    assert compute_config_hash({"a": True}) != compute_config_hash({"a": 1})
    assert compute_config_hash({"a": "1"}) != compute_config_hash({"a": 1})
    assert compute_config_hash({"a": None}) != compute_config_hash({"a": "null"})
    assert compute_config_hash({"a": [1, 2]}) != compute_config_hash({"a": [2, 1]})
    assert compute_config_hash({"a": 1}) == compute_config_hash({"a": 1.0})
    assert compute_config_hash({"a": 2**60}) == compute_config_hash({"a": float(2**60)})
    assert compute_config_hash({"a": 2**60 + 1}) != compute_config_hash({"a": float(2**60)})


def test_hash_handles_non_finite_floats():
    assert compute_config_hash({"a": float("nan")}) == compute_config_hash({"a": float("nan")})
    assert compute_config_hash({"a": float("inf")}) != compute_config_hash({"a": float("-inf")})


def test_hash_rejects_unsupported_values():
    with pytest.raises(UserError, match="unsupported type"):
        compute_config_hash({"a": {1, 2}})


def test_config_yaml_round_trip_with_overrides_and_cli_seed(tmp_path):
    overrides = ["detection.training.learning_rate=1e-3", "detection.training.epochs=3",
                 "tracking.mlflow.experiment=exp #1", "detection.training.augmentation.hsv_h=0",
                 "+detection.training.ultralytics.cos_lr=true"]
    cm = ConfigManager(DETECTION_CONFIG, overrides, seed=7)
    saved = write(tmp_path, cm.to_yaml())
    again = ConfigManager(saved)
    assert again.get_config() == cm.get_config()
    assert again.get_config_hash() == cm.get_config_hash()
    assert (again.seed, again.seed_source) == (7, "config")


_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=6)
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**12, max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10),
)
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3), max_leaves=10,
)
_configs = st.dictionaries(_keys.filter(lambda k: k != "tracking"), _values, min_size=1, max_size=5)


def _reorder(value, rnd):
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _reorder(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_reorder(v, rnd) for v in value]
    return value


@HYPOTHESIS
@given(_configs, st.randoms(use_true_random=False))
def test_property_hash_invariant_under_key_order(config, rnd):
    assert compute_config_hash(_reorder(config, rnd)) == compute_config_hash(config)


@HYPOTHESIS
@given(st.floats(min_value=1e-300, max_value=1.0))
def test_property_hash_invariant_under_float_spelling(x):
    # repr gives "1e-05" for small numbers: the no-dot form PyYAML's YAML 1.1 resolver reads as a string.
    spellings = {repr(x), f"{x:.17e}", f"{x:.17E}", f"{x:.17g}", f"{x:.20f}".rstrip("0")}
    with tempfile.TemporaryDirectory() as tmp:
        hashes = set()
        for i, text in enumerate(sorted(s for s in spellings if float(s) == x)):
            path = Path(tmp) / f"c{i}.yaml"
            path.write_text(f"seed: 1\ndetection:\n  training:\n    learning_rate: {text}\n"
                            "  tasks: {cars: {classes: [car]}}\n")
            cm = ConfigManager(path)
            assert cm.get("detection.training.learning_rate") == x, text
            hashes.add(cm.get_config_hash())
    assert len(hashes) == 1


@pytest.mark.parametrize("a, b", [("0.001", "1e-3"), ("0.0001", "1e-4"), ("1000.0", "1e3"), ("0.5", "5e-1"),
                                  ("-0.02", "-2e-2"), ("2.0", "2")])
def test_hash_same_for_equal_spellings(tmp_path, a, b):
    ha = ConfigManager(training(tmp_path, f"    warmup_epochs: {a.lstrip('-')}\n", "a.yaml")).get_config_hash()
    hb = ConfigManager(training(tmp_path, f"    warmup_epochs: {b.lstrip('-')}\n", "b.yaml")).get_config_hash()
    assert ha == hb


@HYPOTHESIS
@given(_configs)
def test_property_yaml_round_trip_keeps_the_hash(config):
    """What config.yaml holds reads back to the same values and hash, whatever the values are."""
    from src.common.yaml_io import parse_yaml

    again = parse_yaml(dump_yaml(config))
    assert compute_config_hash(again) == compute_config_hash(config)


@HYPOTHESIS
@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=1, max_value=10_000),
       st.floats(min_value=1e-9, max_value=1.0), st.sampled_from(["SGD", "AdamW", "RMSprop"]))
def test_property_config_yaml_round_trip(seed, epochs, lr, optimizer):
    overrides = [f"detection.training.epochs={epochs}", f"detection.training.learning_rate={lr!r}",
                 f"detection.training.optimizer={optimizer}"]
    with tempfile.TemporaryDirectory() as tmp:
        cm = ConfigManager(DETECTION_CONFIG, overrides, seed=seed)
        saved = Path(tmp) / "config.yaml"
        saved.write_text(cm.to_yaml())
        again = ConfigManager(saved)
    assert again.get_config() == cm.get_config()
    assert again.get_config_hash() == cm.get_config_hash()


def _leaf_paths(value, prefix=()):
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaf_paths(v, prefix + (k,))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from _leaf_paths(v, prefix + (i,))
    else:
        yield prefix


def _canonically_equal(a, b):
    return compute_config_hash({"v": a}, 64) == compute_config_hash({"v": b}, 64)


@HYPOTHESIS
@given(_configs, st.data())
def test_property_hash_changes_on_any_value_change(config, data):
    paths = list(_leaf_paths(config))
    path = data.draw(st.sampled_from(paths))
    node = config
    for part in path[:-1]:
        node = node[part]
    old = node[path[-1]]
    new = data.draw(_values)
    assume(not _canonically_equal(old, new))
    changed = copy.deepcopy(config)
    target = changed
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = new
    assert compute_config_hash(changed) != compute_config_hash(config)


# ---------------------------------------------------------------- overrides: values


@pytest.mark.parametrize("raw, expected", [
    ("0.001", 0.001), ("1e-3", 0.001), ("1E-3", 0.001), ("64", 64), ("-5", -5), ("true", True), ("false", False),
    ("True", True), ("null", None), ("~", None), ("[512,512]", [512, 512]), ("[512, 512]", [512, 512]),
    ('{"a":1}', {"a": 1}), ("{a: 1, b: [x, 2]}", {"a": 1, "b": ["x", 2]}), ("[]", []), ("{}", {}),
    ("'64'", "64"), ('"1e-3"', "1e-3"), ('"true"', "true"), ("'null'", "null"), ("''", ""), ("", ""),
    ("hello", "hello"), ("  spaced  ", "spaced"), ("yes", "yes"), ("off", "off"), ("No", "No"),
    ("run #2", "run #2"), ("#tag", "#tag"), ("a: b", "a: b"), ("- x", "- x"), ("---", "---"),
    ("/data/x.pt", "/data/x.pt"), ("2024-01-15", "2024-01-15"), ("a=b", "a=b"), ("inf", "inf"),
    ("&anchor", "&anchor"), ("*alias", "*alias"), ("!!python/name:os.system", "!!python/name:os.system"),
])
def test_override_value_forms(raw, expected):
    value = parse_override_value(raw, f"k={raw}")
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("raw", ["[1,2", "{a: 1", "'unbalanced", '"x" y'])
def test_override_value_unparseable_collection_or_quote(raw):
    with pytest.raises(UserError, match="cannot parse the value of override"):
        parse_override_value(raw, f"k={raw}")


def test_override_value_json_duplicate_key():
    with pytest.raises(UserError, match="duplicate key 'a'"):
        parse_override_value('{"a":1,"a":2}', 'k={"a":1,"a":2}')


def test_override_value_json_escapes():
    assert parse_override_value('"\\ud83d\\ude00 \\u00e9"') == "\U0001F600 \u00e9"


@HYPOTHESIS
@given(st.text(min_size=1, max_size=20).filter(lambda s: s.strip() == s and s[0] not in "[{\"'"))
def test_property_unquoted_text_is_never_a_collection_or_truncated(text):
    value = parse_override_value(text, f"k={text}")
    assert not isinstance(value, (list, dict))
    if isinstance(value, str):
        assert value == text


@HYPOTHESIS
@given(st.one_of(st.text(max_size=15), st.lists(st.one_of(
    st.integers(), st.booleans(), st.none(), st.text(max_size=5),
    st.floats(allow_nan=False, allow_infinity=False)), max_size=4)))
def test_property_json_values_round_trip(value):
    assert parse_override_value(json.dumps(value)) == value


@HYPOTHESIS
@given(st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none()))
def test_property_scalars_round_trip_through_their_text(value):
    text = json.dumps(value)  # 64, 0.001, 1e-05, true, null
    parsed = parse_override_value(text)
    assert parsed == value and type(parsed) is type(value)


# ---------------------------------------------------------------- overrides: keys and types


def test_parse_override_add_flag_and_keys():
    assert parse_override("+a.b=1") == (True, ["a", "b"], 1)
    assert parse_override("detection.training.epochs=3") == (False, ["detection", "training", "epochs"], 3)
    assert parse_override("a=x=y") == (False, ["a"], "x=y")


@pytest.mark.parametrize("text", ["=1", "a..b=1", "noequals", "+=1", ".a=1", "a.=1", "a b=1", "a.b c=1", "", "+"])
def test_malformed_overrides(text):
    with pytest.raises(UserError, match="malformed override"):
        parse_override(text)


def test_override_through_config_manager():
    cm = ConfigManager(DETECTION_CONFIG, ["detection.training.learning_rate=0.001",
                                          "detection.training.batch_size=64"])
    assert cm.get("detection.training.learning_rate") == 0.001
    assert cm.get("detection.training.batch_size") == 64
    assert cm.overrides == ["detection.training.learning_rate=0.001", "detection.training.batch_size=64"]
    assert cm.get_config_hash() != ConfigManager(DETECTION_CONFIG).get_config_hash()


def test_overrides_apply_in_order_and_do_not_touch_the_input():
    base = {"a": {"b": 1}}
    result = apply_overrides(base, ["a.b=2", "a.b=3"])
    assert result == {"a": {"b": 3}} and base == {"a": {"b": 1}}


def test_unknown_key_suggests_close_keys():
    with pytest.raises(UserError) as err:
        ConfigManager(DETECTION_CONFIG, ["detection.training.epoch=3"])
    msg = str(err.value)
    assert "unknown config key 'detection.training.epoch'" in msg
    assert "did you mean detection.training.epochs" in msg
    assert "+detection.training.epoch=" not in msg  # '+' cannot add keys the schema does not have


def test_unknown_key_in_the_file_names_the_file_and_suggests(tmp_path):
    path = training(tmp_path, "    learnng_rate: 0.1\n")
    with pytest.raises(UserError) as err:
        ConfigManager(path)
    assert str(err.value) == (f"config {path}: unknown config key detection.training.learnng_rate; did you mean "
                              "detection.training.learning_rate?")


def test_plus_cannot_add_keys_that_would_be_ignored():
    with pytest.raises(UserError) as err:
        ConfigManager(DETECTION_CONFIG, ["+detection.training.mixup=0.5"])
    assert "unknown config key 'detection.training.mixup'" in str(err.value)
    assert "detection.training.augmentation.mixup" in str(err.value)
    with pytest.raises(UserError, match="unknown config key 'experiment' in override '\\+experiment.notes.owner=ana'"):
        ConfigManager(DETECTION_CONFIG, ["+experiment.notes.owner=ana"])


def test_unknown_section_suggests_close_section():
    with pytest.raises(UserError, match="did you mean detection.training"):
        ConfigManager(DETECTION_CONFIG, ["detection.trainig.epochs=3"])


def test_unknown_key_without_close_match_still_explains():
    with pytest.raises(UserError, match=r"unknown config key 'zzzz'.*use \+zzzz=\.\.\."):
        apply_overrides({"a": 1}, ["zzzz=1"])


def test_plus_adds_subtasks_and_extra_library_arguments():
    cm = ConfigManager(DETECTION_CONFIG, ["+detection.training.ultralytics.cos_lr=true",
                                          '+detection.tasks.trams.classes=["tram"]'])
    assert cm.get("detection.training.ultralytics") == {"cos_lr": True}
    assert cm.get("detection.tasks.trams") == {"classes": ["tram"]}


def test_extra_library_arguments_are_checked():
    with pytest.raises(UserError, match="mixup is set by street-scene from detection.training.augmentation.mixup"):
        ConfigManager(DETECTION_CONFIG, ["+detection.training.ultralytics.mixup=0.5"])
    with pytest.raises(UserError, match="cache is not an ultralytics training argument street-scene forwards"):
        ConfigManager(DETECTION_CONFIG, ["+detection.training.ultralytics.cache=true"])
    with pytest.raises(UserError, match="box must be a number >= 0"):
        ConfigManager(DETECTION_CONFIG, ["+detection.training.ultralytics.box=-1"])


def test_plus_on_existing_key_is_an_error():
    with pytest.raises(UserError, match="already exists; drop the leading '\\+'"):
        ConfigManager(DETECTION_CONFIG, ["+detection.training.epochs=3"])


def test_override_below_a_value_is_an_error():
    with pytest.raises(UserError, match="detection.training.epochs is a value, not a section"):
        ConfigManager(DETECTION_CONFIG, ["detection.training.epochs.x=1"])
    with pytest.raises(UserError, match="is a value, not a section"):
        ConfigManager(DETECTION_CONFIG, ["+seed.x=1"])


@pytest.mark.parametrize("override, expected", [
    ("detection.training.learning_rate=abc", "must be a valid number, got 'abc'"),
    ("detection.training.learning_rate=true", "must be a valid number, got True"),
    ("detection.training.learning_rate=[1]", "must be a valid number"),
    ("detection.training.epochs=2.5", "must be a valid integer, got 2.5"),
    ("detection.training.epochs=true", "must be a valid integer, got True"),
    ("detection.training.epochs=null", "must be a valid integer, got None"),
    ("detection.training.optimizer=[SGD]", "must be 'SGD', 'MuSGD'"),
    ("detection.training.optimizer=true", "must be 'SGD', 'MuSGD'"),
    ("detection.tasks.vehicle_detection.classes=car", "must be a valid list, got 'car'"),
    ("detection.training=3", "must be a valid dictionary or instance of DetectionTraining"),
])
def test_type_incompatible_override(override, expected):
    with pytest.raises(UserError) as err:
        ConfigManager(DETECTION_CONFIG, [override])
    assert str(err.value).startswith(f"override {override!r}: ")
    assert expected in str(err.value)


def test_int_to_float_allowed_and_becomes_float():
    cm = ConfigManager(DETECTION_CONFIG, ["detection.training.learning_rate=1",
                                          "detection.training.augmentation.mosaic=0"])
    assert cm.get("detection.training.learning_rate") == 1.0
    assert isinstance(cm.get("detection.training.learning_rate"), float)
    assert isinstance(cm.get("detection.training.augmentation.mosaic"), float)


def test_number_for_a_string_key_is_the_text_typed():
    cm = ConfigManager(DETECTION_CONFIG, ["tracking.mlflow.experiment=2024", "detection.model.weights=1e-3"])
    assert cm.get("tracking.mlflow.experiment") == "2024"
    assert cm.get("detection.model.weights") == "1e-3"


def test_null_default_takes_its_schema_type():
    cm = ConfigManager(DETECTION_CONFIG, ["detection.model.weights=/models/y.pt"])
    assert cm.get("detection.model.weights") == "/models/y.pt"
    with pytest.raises(UserError, match="detection.model.weights must be a valid string"):
        ConfigManager(DETECTION_CONFIG, ["detection.model.weights=[1]"])


def test_list_override_replaces_list():
    cm = ConfigManager(DETECTION_CONFIG, ['detection.tasks.vehicle_detection.classes=["car","van"]'])
    assert cm.get("detection.tasks.vehicle_detection.classes") == ["car", "van"]


def test_seed_override_is_a_config_seed():
    cm = ConfigManager(DETECTION_CONFIG, ["seed=5"])
    assert (cm.seed, cm.seed_source) == (5, "config")


# ---------------------------------------------------------------- diff / dictdiff


def test_config_manager_diff_against_a_checkpoint_config():
    cm = ConfigManager(DETECTION_CONFIG, ["detection.training.learning_rate=0.001"])
    old = ConfigManager(DETECTION_CONFIG).get_config()
    old["tracking"] = {"mlflow": {"experiment": "x"}}  # not hashed, so not a difference
    assert cm.diff(old) == [("detection.training.learning_rate", 0.01, 0.001)]
    assert cm.diff(cm.get_config()) == []


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1], "e": {}}


def test_diff_dicts_semantics():
    old = {"a": 1, "b": {"c": True, "d": 2}, "n": float("nan"), "l": [1, 2]}
    new = {"a": 1.0, "b": {"c": 1, "e": 3}, "n": float("nan"), "l": [1.0, 2]}
    assert diff_dicts(old, new) == [("b.c", True, 1), ("b.d", 2, MISSING), ("b.e", MISSING, 3)]


def test_format_changes():
    lines = format_changes([("x.lr", 0.01, 0.001), ("y", None, True), ("z", MISSING, "a")])
    assert lines == ["x.lr: 0.01 -> 0.001", "y: null -> true", "z: <missing> -> a"]


def test_run_dir_config_is_saved_through_the_manager(tmp_path):
    config = write(tmp_path, "seed: 3\n" + MINIMAL, "c.yaml")
    cm = ConfigManager(config, ["detection.training.learning_rate=1e-3"])
    run_id, run_dir = cm.create_run_dir("exp", tmp_path / "outputs")
    assert run_dir.parent == (tmp_path / "outputs").resolve() and run_id.endswith("_exp")
    saved = cm.save_config(run_dir)
    assert ConfigManager(saved).get_config_hash() == cm.get_config_hash()
    assert (run_dir / "overrides.yaml").read_text().strip() == "- detection.training.learning_rate=1e-3"