"""src/common/yaml_io.py: safe loading, YAML 1.2 floats, duplicate keys, errors with line numbers, dumping."""

import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from src.common.errors import UserError
from src.common.yaml_io import dump_yaml, load_yaml, parse_yaml, plain_scalar_tag


@pytest.mark.parametrize("text, expected", [
    ("1e-4", 1e-4), ("1E-4", 1e-4), ("1e4", 1e4), ("-2e-3", -2e-3), ("+3e2", 300.0), ("1.5e-3", 1.5e-3),
    ("0.001", 0.001), ("1.", 1.0), (".5", 0.5), ("-.5", -0.5), ("1_000.5", 1000.5), ("-1.25", -1.25),
])
def test_floats_follow_yaml_1_2(text, expected):
    value = parse_yaml(f"x: {text}")["x"]
    assert isinstance(value, float)
    assert value == pytest.approx(expected)


def test_special_floats():
    data = parse_yaml("a: .inf\nb: -.inf\nc: .nan\n")
    assert data["a"] == math.inf and data["b"] == -math.inf and math.isnan(data["c"])


@pytest.mark.parametrize("text, expected", [
    ("64", 64), ("-3", -3), ("true", True), ("false", False), ("null", None), ("~", None),
    ("abc", "abc"), ("1e", "1e"), ("e5", "e5"), ("._", "._"), ("inf", "inf"), ("1.2.3", "1.2.3"),
])
def test_other_scalars(text, expected):
    value = parse_yaml(f"x: {text}")["x"]
    assert value == expected and type(value) is type(expected)


def test_dates_stay_strings():
    # A date object would be neither hashable as config nor JSON; users mean the text.
    assert parse_yaml("d: 2024-01-15\nt: 2024-01-15 14:30:22") == {"d": "2024-01-15", "t": "2024-01-15 14:30:22"}


def test_equals_sign_loads_as_string():
    assert parse_yaml("op: =") == {"op": "="}


def test_duplicate_key_is_an_error_with_both_lines():
    with pytest.raises(UserError) as err:
        parse_yaml("a: 1\nb: 2\na: 3\n", "cfg.yaml")
    msg = str(err.value)
    assert "duplicate key 'a'" in msg and "first at line 1" in msg and "cfg.yaml, line 3" in msg
    assert "\n" not in msg


def test_nested_duplicate_key_is_an_error():
    with pytest.raises(UserError, match="duplicate key 'lr'"):
        parse_yaml("train:\n  lr: 1\n  lr: 2\n")


def test_same_key_in_different_sections_is_fine():
    assert parse_yaml("a:\n  x: 1\nb:\n  x: 2\n") == {"a": {"x": 1}, "b": {"x": 2}}


def test_merge_keys_work_and_may_be_overridden():
    text = "base: &b\n  lr: 0.1\n  epochs: 3\nexp:\n  <<: *b\n  lr: 0.2\n"
    assert parse_yaml(text) == {"base": {"lr": 0.1, "epochs": 3}, "exp": {"lr": 0.2, "epochs": 3}}


@pytest.mark.parametrize("text", ["? [a, b]\n: 1\n", "{[1]: 2}"])
def test_unhashable_key_is_a_user_error(text):
    with pytest.raises(UserError, match="unhashable key"):
        parse_yaml(text)


@pytest.mark.parametrize("text", [
    "!!python/object/apply:os.system ['echo hacked']",
    "a: !!python/name:os.system",
    "a: !!python/object:collections.OrderedDict {}",
])
def test_python_tags_are_rejected(text):
    with pytest.raises(UserError, match="invalid YAML"):
        parse_yaml(text)


def test_syntax_error_names_source_line_and_column():
    with pytest.raises(UserError) as err:
        parse_yaml("a: 1\nb: [1, 2\nc: 3\n", "conf.yaml")
    msg = str(err.value)
    assert msg.startswith("invalid YAML in conf.yaml, line ")
    assert "\n" not in msg


def test_bad_indentation_reports_its_line():
    with pytest.raises(UserError, match=r"bad\.yaml, line 3"):
        parse_yaml("a:\n  b: 1\n c: 2\n", "bad.yaml")


def test_load_yaml_missing_file(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        load_yaml(tmp_path / "missing.yaml")


def test_load_yaml_directory(tmp_path):
    with pytest.raises(UserError, match="is a directory"):
        load_yaml(tmp_path)


def test_load_yaml_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="cannot read"):
        load_yaml(path)


def test_load_yaml_empty_file_is_none(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# only a comment\n")
    assert load_yaml(path) is None


def test_plain_scalar_tag():
    assert plain_scalar_tag("1e-3").endswith(":float")
    assert plain_scalar_tag("64").endswith(":int")
    assert plain_scalar_tag("true").endswith(":bool")
    assert plain_scalar_tag("null").endswith(":null")
    assert plain_scalar_tag("2024-01-01").endswith(":str")
    assert plain_scalar_tag("hello").endswith(":str")


@pytest.mark.parametrize("text", ["1e-4", "0.001", "64", "true", "yes", "null", "~", "2024-01-01", "-.5", "=",
                                  "1:30", "012", "a: b", "- x", "#x", "", " lead", "multi\nline", "'q'", "ünï"])
def test_strings_round_trip_for_us_and_for_plain_pyyaml(text):
    dumped = dump_yaml({"s": text})
    assert parse_yaml(dumped) == {"s": text}
    # ultralytics reads our data.yaml with PyYAML's YAML 1.1 loader: strings must stay strings there too.
    assert yaml.safe_load(dumped) == {"s": text}


def test_numbers_are_dumped_plain():
    dumped = dump_yaml({"lr": 1e-5, "n": 3, "f": 0.5})
    assert "'" not in dumped and '"' not in dumped
    assert parse_yaml(dumped) == {"lr": 1e-5, "n": 3, "f": 0.5}


def test_dump_never_emits_aliases():
    shared = {"a": 1}
    dumped = dump_yaml({"x": shared, "y": shared})
    assert "&" not in dumped and "*" not in dumped
    assert parse_yaml(dumped) == {"x": {"a": 1}, "y": {"a": 1}}


def test_dump_keeps_key_order():
    dumped = dump_yaml({"z": 1, "a": 2, "m": 3})
    assert [line.split(":")[0] for line in dumped.splitlines()] == ["z", "a", "m"]


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**63, max_value=2**63),
    st.floats(allow_nan=False), st.text(max_size=12),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), _values, max_size=5))
def test_dump_load_round_trip(data):
    assert parse_yaml(dump_yaml(data)) == data
