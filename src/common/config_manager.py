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

from src.common.dictdiff import diff_dicts, flatten
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
    """Load a YAML config, apply overrides, resolve the seed, and hash the result.

    Seed precedence: `seed` argument (the `--seed` flag) > STREET_SCENE_SEED > the config's `seed` > 42.
    """

    def __init__(self, config_path, overrides: Sequence[str] = (), seed: Optional[int] = None):
        self.config_path = Path(config_path)
        raw = load_yaml(self.config_path)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise UserError(
                f"config {self.config_path} must be a YAML mapping (key: value), not {type(raw).__name__}"
            )
        self.overrides: List[str] = list(overrides)
        config = apply_overrides(raw, self.overrides)
        _canonical(config)  # fail at load time, not after the run dir exists, on values a hash cannot cover
        self.seed, self.seed_source = resolve_seed(seed, os.environ.get(SEED_ENV), config.get("seed"))
        config["seed"] = self.seed
        self._config = config

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

        atomic_write_text(Path(run_dir) / "overrides.yaml", dump_yaml(list(self.overrides)))
        atomic_write_text(Path(run_dir) / "config.yaml", self.to_yaml())
        return Path(run_dir) / "config.yaml"

    def save_metadata(self, run_dir: Path, metadata: Dict[str, Any]) -> Path:
        """Write `metadata.yaml` (atomically) with this config's hash and seed added."""
        from src.common.metadata import METADATA_FILE, write_metadata

        write_metadata(Path(run_dir), {**metadata, "config_hash": self.get_config_hash(), "seed": self.seed,
                                       "seed_source": self.seed_source})
        return Path(run_dir) / METADATA_FILE


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


def apply_overrides(config: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Return a copy of `config` with each `key.sub=value` / `+new.key=value` override applied in order."""
    result = copy.deepcopy(config)
    for text in overrides:
        add, keys, value = parse_override(text)
        _set_key(result, keys, value, add, text)
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


def _set_key(config: Dict[str, Any], keys: List[str], value: Any, add: bool, text: str) -> None:
    node = config
    for depth, part in enumerate(keys[:-1]):
        if part not in node:
            if add:
                node[part] = {}
            else:
                _unknown_key(config, ".".join(keys[: depth + 1]), text)
        if not isinstance(node[part], dict):
            raise UserError(f"override {text!r}: {'.'.join(keys[: depth + 1])} is a value, not a section")
        node = node[part]
    leaf = keys[-1]
    dotted = ".".join(keys)
    if add:
        if leaf in node:
            raise UserError(f"override {text!r}: {dotted} already exists; drop the leading '+' to change it")
        node[leaf] = value
        return
    if leaf not in node:
        _unknown_key(config, dotted, text)
    node[leaf] = coerce_to_default(node[leaf], value, dotted, text)


def _unknown_key(config: Dict[str, Any], dotted: str, text: str) -> None:
    known = sorted(set(flatten(config)) | _section_keys(config))
    close = difflib.get_close_matches(dotted, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UserError(f"unknown config key {dotted!r} in override {text!r}; {hint}use +{dotted}=... to add a new key")


def _section_keys(config: Dict[str, Any], prefix: str = "") -> set:
    keys = set()
    for k, v in config.items():
        if isinstance(v, dict):
            keys.add(prefix + str(k))
            keys |= _section_keys(v, f"{prefix}{k}.")
    return keys


def coerce_to_default(default: Any, value: Any, dotted: str, text: str) -> Any:
    """Type-check an override value against the key's current value; int -> float is allowed."""
    if default is None or type(value) is type(default):
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, str) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return text.split("=", 1)[1].strip()  # `name=2024` means the string the user typed
    raise UserError(
        f"override {text!r}: {dotted} expects {_type_name(default)} (default {default!r}), "
        f"got {_type_name(value)} {value!r}"
    )


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)
