"""ConfigManager: the one place a run's configuration is loaded, overridden, validated and hashed.

The resolved config (file + `--config-override`s + the resolved `seed`) is what a run saves as `config.yaml`;
loading that file again gives the same config and the same hash.
"""

import copy
import difflib
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from src.common.dictdiff import diff_dicts
from src.common.errors import UserError
from src.common.yaml_io import dump_yaml, load_yaml, parse_yaml, plain_scalar_tag

DEFAULT_SEED = 42
SEED_ENV = "STREET_SCENE_SEED"
# Where results are *logged*, not what produces them: excluded from the hash like run names and output paths.
HASH_EXCLUDED_KEYS = ("tracking",)

_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")
_YAML_BOOL_WORDS = ("true", "false")
_BOOL_TAG = "tag:yaml.org,2002:bool"
_SCALAR_TAGS = ("tag:yaml.org,2002:null", _BOOL_TAG, "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


class ConfigManager:
    """Load a YAML config, validate it against its task family's schema, apply overrides, resolve the seed,
    and hash the result.

    The config file and then the overrides are validated (src/common/config_schema.py): unknown keys, wrong
    types, non-finite numbers and out-of-range values are a UserError naming the file or the override. The
    resolved config holds every key with its default filled in, so the hash covers everything that ran.

    `task` is the family (`detection` / `segmentation`); None infers it from the config's family section.
    Seed precedence: `seed` argument (the `--seed` flag) > STREET_SCENE_SEED > the config's `seed` > 42.
    """

    def __init__(self, config_path, overrides: Sequence[str] = (), seed: Optional[int] = None,
                 task: Optional[str] = None):
        from src.tasks import config_schema, family_of_config

        self.config_path = Path(config_path)
        raw = load_yaml(self.config_path)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise UserError(
                f"config {self.config_path} must be a YAML mapping (key: value), not {type(raw).__name__}"
            )
        self.task = family_of_config(raw, f"config {self.config_path}", task)
        self.schema = config_schema(self.task)
        self.overrides: List[str] = list(overrides)
        base = checked_config(self.schema, raw, f"config {self.config_path}")
        config = apply_overrides(base, self.overrides, self.schema)
        seed_given = "seed" in raw or any(parse_override(o)[1] == ["seed"] for o in self.overrides)
        self.seed, self.seed_source = resolve_seed(seed, os.environ.get(SEED_ENV),
                                                   config.get("seed") if seed_given else None)
        config["seed"] = self.seed
        self._config = checked_config(self.schema, config, f"config {self.config_path}", self.overrides)

    def get_config(self) -> Dict[str, Any]:
        """The resolved config as a plain nested dict (a copy: callers cannot change the manager's)."""
        return copy.deepcopy(self._config)

    def get(self, dotted_key: str, default: Any = None) -> Any:
        node: Any = self._config
        for part in dotted_key.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return copy.deepcopy(node)

    def get_config_hash(self) -> str:
        """8 lowercase hex chars identifying the resolved config (see `compute_config_hash`)."""
        return compute_config_hash(self._config)

    def get_config_sha256(self) -> str:
        return compute_config_hash(self._config, length=64)

    def diff(self, other: Dict[str, Any]) -> List[Tuple[str, Any, Any]]:
        """Differences from `other` (e.g. a checkpoint's config) to this config, as dotted keys."""
        return diff_dicts(_hashed_part(other), _hashed_part(self._config))

    def to_yaml(self) -> str:
        return dump_yaml(self._config)

    def create_run_dir(self, run_name: str, root: Optional[Path] = None) -> Tuple[str, Path]:
        """A fresh `<YYYYMMDD_HHMMSS>_<run_name>` directory under `root` / STREET_SCENE_OUTPUT_DIR / ./outputs."""
        from src.common.run_dir import create_run_dir

        return create_run_dir(run_name, root)

    def save_config(self, run_dir: Path) -> Path:
        """Write the resolved config as `config.yaml` (and the overrides as given as `overrides.yaml`)."""
        from src.common.atomic import atomic_write_text

        from src.common.run_dir import CONFIG_FILE, OVERRIDES_FILE

        atomic_write_text(Path(run_dir) / OVERRIDES_FILE, dump_yaml(list(self.overrides)))
        atomic_write_text(Path(run_dir) / CONFIG_FILE, self.to_yaml())
        return Path(run_dir) / CONFIG_FILE


def checked_config(schema: type, config: Dict[str, Any], source: str, overrides: Sequence[str] = ()
                   ) -> Dict[str, Any]:
    """`config` validated by `schema` with defaults filled in; the first problem is a one-line UserError that names
    the override that set the key, or else `source`."""
    from src.common.config_schema import validate

    filled, problems = validate(schema, config)
    if not problems:
        return filled
    first = problems[0]
    more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
    culprit = _override_for(first.loc, overrides)
    where = f"override {culprit!r}" if culprit else source
    raise UserError(f"{where}: {first.message}{more}")


def _override_for(loc: Tuple[str, ...], overrides: Sequence[str]) -> Optional[str]:
    """The last override whose key is `loc`, inside it, or holds it."""
    for text in reversed(list(overrides)):
        keys = tuple(parse_override(text)[1])
        shared = min(len(keys), len(loc))
        if keys[:shared] == tuple(loc[:shared]):
            return text
    return None


def compute_config_hash(config: Dict[str, Any], length: int = 8) -> str:
    """sha256 of a canonical JSON form of `config`, truncated to `length` hex chars.

    Canonical: keys sorted, numbers normalised (0.001 == 1e-3, 1.0 == 1), no whitespace; top-level keys in
    HASH_EXCLUDED_KEYS are left out. So the hash ignores key order, YAML spelling and a save/load round trip,
    and changes when any value that reaches training changes.
    """
    canonical = json.dumps(_canonical(_hashed_part(config)), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:length]


def _hashed_part(config: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in config.items() if k not in HASH_EXCLUDED_KEYS}


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value == int(value):
            return int(value)  # exact at any magnitude: 2.0**60 == 2**60, so both must hash alike
        return value
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    raise UserError(f"config value {value!r} has unsupported type {type(value).__name__}")


def resolve_seed(cli_seed: Optional[int], env_seed: Optional[str], config_seed: Any) -> Tuple[int, str]:
    """(seed, source) by precedence: cli > env STREET_SCENE_SEED > config `seed` > 42."""
    if cli_seed is not None:
        return _check_seed(cli_seed, "--seed"), "cli"
    if env_seed not in (None, ""):
        try:
            return _check_seed(int(env_seed), SEED_ENV), "env"
        except ValueError:
            raise UserError(f"{SEED_ENV}={env_seed!r} is not an integer; set it to e.g. 42 or unset it") from None
    if config_seed is not None:
        if isinstance(config_seed, bool) or not isinstance(config_seed, int):
            raise UserError(f"config key 'seed' must be an integer, got {config_seed!r}")
        return _check_seed(config_seed, "config key 'seed'"), "config"
    return DEFAULT_SEED, "default"


def _check_seed(seed: int, where: str) -> int:
    if not 0 <= seed < 2**32:
        raise UserError(f"{where}: seed {seed} is out of range; use an integer in [0, 2**32)")
    return int(seed)


# ---------------------------------------------------------------- overrides


def apply_overrides(config: Dict[str, Any], overrides: Sequence[str], schema: Optional[type] = None
                    ) -> Dict[str, Any]:
    """Return a copy of `config` with each `key.sub=value` / `+new.key=value` override applied in order.

    With a `schema`, `+` may only add keys inside the mappings whose keys users choose (subtasks, extra library
    arguments); every other key already exists in a validated config, with its default.
    """
    result = copy.deepcopy(config)
    for text in overrides:
        add, keys, value = parse_override(text)
        _set_key(result, keys, value, add, text, schema)
    return result


def parse_override(text: str) -> Tuple[bool, List[str], Any]:
    """'+a.b=1' -> (True, ['a', 'b'], 1). Values are JSON/YAML scalars or collections; the rest are strings."""
    if not isinstance(text, str) or "=" not in text:
        raise UserError(f"malformed override {text!r}: expected key.sub.leaf=value")
    key, raw = text.split("=", 1)
    add = key.startswith("+")
    key = key[1:] if add else key
    parts = key.split(".")
    if not key or not all(_KEY_SEGMENT.match(p) for p in parts):
        raise UserError(
            f"malformed override {text!r}: the key must be dot-separated names like detection.training.epochs"
        )
    return add, parts, parse_override_value(raw, text)


def parse_override_value(raw: str, text: str = "") -> Any:
    """'1e-3' -> 0.001, '64' -> 64, 'true' -> True, 'null' -> None, '[512,512]' -> [512, 512], "'64'" -> '64';
    any other text is the string as typed (`run #2` keeps its `#2`, `a: b` is not a mapping)."""
    stripped = raw.strip()
    if stripped == "":
        return ""
    if stripped[0] in "[{\"'":  # a JSON/YAML flow collection or a quoted string
        try:  # JSON first: YAML does not join JSON's surrogate-pair escapes ("\ud83d\ude00")
            return json.loads(stripped, object_pairs_hook=_json_object)
        except _DuplicateKey as exc:
            raise UserError(f"override {text!r}: duplicate key {exc} in the value") from None
        except ValueError:
            pass
        try:
            return parse_yaml(stripped, f"override {text!r}")
        except UserError:
            raise UserError(f"cannot parse the value of override {text!r}; lists/dicts use JSON, e.g. [512,512], "
                            "and quotes must be balanced") from None
    tag = plain_scalar_tag(stripped)
    if tag not in _SCALAR_TAGS:
        return stripped  # strings, and text YAML would read as comments, documents or block collections
    if tag == _BOOL_TAG and stripped.lower() not in _YAML_BOOL_WORDS:
        return stripped  # YAML 1.1 would read yes/no/on/off as booleans; users mean the word
    return parse_yaml(stripped, f"override {text!r}")


class _DuplicateKey(ValueError):
    pass


def _json_object(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    result: Dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(repr(key))  # json would silently keep the last one
        result[key] = value
    return result


def _set_key(config: Dict[str, Any], keys: List[str], value: Any, add: bool, text: str,
             schema: Optional[type] = None) -> None:
    node = config
    for depth, part in enumerate(keys[:-1]):
        if part not in node:
            if add:
                _check_addable(schema, keys[: depth + 1], config, text)
                node[part] = {}
            else:
                _unknown_key(config, ".".join(keys[: depth + 1]), text, schema)
        if not isinstance(node[part], dict):
            raise UserError(f"override {text!r}: {'.'.join(keys[: depth + 1])} is a value, not a section")
        node = node[part]
    leaf = keys[-1]
    dotted = ".".join(keys)
    if add:
        if leaf in node:
            raise UserError(f"override {text!r}: {dotted} already exists; drop the leading '+' to change it")
        _check_addable(schema, keys, config, text)
        node[leaf] = value
        return
    if leaf not in node:
        _unknown_key(config, dotted, text, schema)
    if _expects_text(schema, keys) and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = text.split("=", 1)[1].strip()  # `experiment=2024` means the text typed
    node[leaf] = coerce_to_default(node[leaf], value, dotted, text)


def _expects_text(schema: Optional[type], keys: List[str]) -> bool:
    """Whether the schema types this key as text (str or Optional[str]), even when its default is null."""
    from src.common.config_schema import field_type

    return schema is not None and field_type(schema, tuple(keys)) is str


def _check_addable(schema: Optional[type], keys: List[str], config: Dict[str, Any], text: str) -> None:
    """With a schema, a new key is only allowed as a new entry of an open mapping (or inside such a new entry)."""
    from src.common.config_schema import open_mapping

    if schema is None:
        return
    for depth in range(len(keys), 0, -1):
        if open_mapping(schema, tuple(keys[: depth - 1])):
            return
    _unknown_key(config, ".".join(keys), text, schema)


def _unknown_key(config: Dict[str, Any], dotted: str, text: str, schema: Optional[type] = None) -> None:
    from src.common.config_schema import open_mapping, section_at

    keys = tuple(dotted.split("."))
    parent = _node_at(config, keys[:-1])
    siblings = [k for k in parent] if isinstance(parent, dict) else []
    close = difflib.get_close_matches(keys[-1], siblings, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join('.'.join(keys[:-1] + (c,)) for c in close)}?" if close else ""
    if schema is None or open_mapping(schema, keys[:-1]):
        raise UserError(f"unknown config key {dotted!r} in override {text!r}{hint} (use +{dotted}=... to add "
                        "a new key)")
    extra = getattr(section_at(schema, keys[:-1]), "unknown_key_hint", None)
    more = f" ({extra(keys[-1])})" if extra and not close else ""
    raise UserError(f"unknown config key {dotted!r} in override {text!r}{hint}{more}")


def _node_at(config: Dict[str, Any], keys: Tuple[str, ...]) -> Any:
    node: Any = config
    for part in keys:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def coerce_to_default(default: Any, value: Any, dotted: str, text: str) -> Any:
    """Read an override value the way the key's current value suggests: an integer where a number is expected
    becomes a float, and a number where text is expected stays the text typed (`name=2024`). Whether the value
    is acceptable is the schema's call."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, str) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return text.split("=", 1)[1].strip()
    return value
