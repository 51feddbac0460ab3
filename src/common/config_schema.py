"""The config schema: every key a config may hold, its type, range and default, in one place.

Each task family owns the schema of its own section (`src/tasks/<family>/schema.py`); this module holds the
sections every config shares (seed, device, checkpoint, tracking) and turns validation failures into one-line
messages with the dotted key and close-match suggestions.

Why pydantic v2: `extra="forbid"` rejects unknown keys anywhere, strict types refuse "1" for 1 and True for 1,
`allow_inf_nan=False` refuses NaN/inf, and every error carries the key path we report; it is already pinned.
Defaults live here only: the shipped YAMLs document them, and a test keeps the two in step.
This module never imports torch (`--help` and config errors stay instant).
"""

import difflib
import re
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

# Keys of the open mappings (subtask names, extra library arguments) must look like identifiers.
KEY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
SEED_LIMIT = 2**32


class Section(BaseModel):
    """Base of every config section: unknown keys, loose types and non-finite numbers are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True)


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda|cuda:\d{1,2}", value):
        raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {value!r}")
    return value


def _identifier_keys(mapping: Dict[str, Any]) -> Dict[str, Any]:
    for key in mapping:
        if not KEY_NAME.fullmatch(key):
            raise ValueError(f"key {key!r} must start with a letter and hold only letters, digits and '_'")
    return mapping


def _unique(items: List[Any]) -> List[Any]:
    seen = set()
    for item in items:
        if item in seen:
            raise ValueError(f"{item!r} appears twice")
        seen.add(item)
    return items


def _class_name(value: str) -> str:
    if not value.strip() or any(ch in value for ch in "\n\r\t\x00"):
        raise ValueError(f"class name {value!r} must be non-empty text on one line")
    return value


Device = Annotated[str, AfterValidator(_device)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
ClassNames = Annotated[List[Annotated[str, AfterValidator(_class_name)]],
                       Field(min_length=1, max_length=1000), AfterValidator(_unique)]
Workers = Annotated[int, Field(ge=0, le=64)]


class CheckpointSection(Section):
    save_every: int = Field(1, ge=0, le=1_000_000)
    keep_last: int = Field(0, ge=0, le=1_000_000)


class MlflowSection(Section):
    enabled: bool = False
    tracking_uri: Optional[str] = None
    experiment: Optional[str] = None


class WandbSection(Section):
    enabled: bool = False
    project: Optional[str] = None
    entity: Optional[str] = None
    mode: Optional[Literal["offline", "online"]] = None


class TrackingSection(Section):
    mlflow: MlflowSection = Field(default_factory=MlflowSection)
    wandb: WandbSection = Field(default_factory=WandbSection)


def config_model(family: str, family_section: type) -> type:
    """The schema of a whole config file for one task family: shared keys plus `<family>:`, in file order."""
    return create_model(
        f"{family.title()}Config",
        __base__=Section,
        seed=(int, Field(42, ge=0, lt=SEED_LIMIT)),
        device=(Device, "auto"),
        checkpoint=(CheckpointSection, Field(default_factory=CheckpointSection)),
        **{family: (family_section, ...)},
        tracking=(TrackingSection, Field(default_factory=TrackingSection)),
    )


# ---------------------------------------------------------------- validation and messages


@dataclass(frozen=True)
class Problem:
    """One validation failure: the key path (tuple) and a message that already names it."""

    loc: Tuple[str, ...]
    message: str


def validate(model: type, data: Dict[str, Any]) -> Tuple[Optional[Dict[str, Any]], List[Problem]]:
    """(config with every default filled in, []) or (None, problems)."""
    try:
        return model.model_validate(data).model_dump(), []
    except ValidationError as exc:
        return None, [_problem(model, err) for err in exc.errors(include_url=False)]


def dotted(loc: Tuple[Any, ...]) -> str:
    """('a', 'b', 0) -> 'a.b[0]'."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _problem(model: type, err: Dict[str, Any]) -> Problem:
    loc = tuple(err["loc"])
    key = dotted(loc)
    if err["type"] == "extra_forbidden":
        return Problem(loc, _unknown_key_message(model, loc))
    if err["type"] == "missing":
        return Problem(loc, f"{key} is required")
    message = err["msg"]
    message = message[len("Value error, "):] if message.startswith("Value error, ") else message
    message = message.replace("Input should be", "must be").replace("Input", "value")
    if err["type"] == "value_error":  # our own validators' messages say what is wrong with which value
        return Problem(loc, f"{key}: {message}")
    shown = err.get("input")
    got = "" if isinstance(shown, (dict, list)) else f", got {shown!r}"
    return Problem(loc, f"{key} {message[0].lower()}{message[1:]}{got}")


def _unknown_key_message(model: type, loc: Tuple[Any, ...]) -> str:
    parent = section_at(model, loc[:-1])
    known = list(getattr(parent, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), known, n=3, cutoff=0.6)
    where = dotted(loc[:-1]) or "the top level"
    hint = f"; did you mean {', '.join(dotted(loc[:-1] + (c,)) for c in close)}?" if close else \
        f"; {where} holds {', '.join(known)}" if known else ""
    extra = getattr(parent, "unknown_key_hint", None)
    return f"unknown config key {dotted(loc)}{hint}" + (f" ({extra(str(loc[-1]))})" if extra and not close else "")


def section_at(model: type, loc: Tuple[Any, ...]) -> Any:
    """The section model class at `loc` (dict keys such as subtask names are stepped over), or None."""
    node: Any = model
    parts = list(loc)
    while parts:
        fields = getattr(node, "model_fields", None)
        if fields is None or parts[0] not in fields:
            return None
        node = _unwrap(fields[parts.pop(0)].annotation)
        if typing.get_origin(node) in (dict, Dict):
            if not parts:
                return None
            parts.pop(0)  # the mapping's key, e.g. a subtask name
            node = _unwrap(typing.get_args(node)[1])
    return node


def _unwrap(annotation: Any) -> Any:
    """Optional[X] / Annotated[X, ...] -> X."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin is typing.Union:
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def field_type(model: type, loc: Tuple[str, ...]) -> Any:
    """The (unwrapped) type of the field at `loc`, or None when `loc` is not a field."""
    parent = section_at(model, loc[:-1]) if loc else None
    fields = getattr(parent, "model_fields", None)
    if not fields or loc[-1] not in fields:
        return None
    return _unwrap(fields[loc[-1]].annotation)


def open_mapping(model: type, loc: Tuple[str, ...]) -> bool:
    """Whether `loc` names a mapping whose keys the user chooses (subtasks, extra library arguments)."""
    if not loc:
        return False
    parent = section_at(model, loc[:-1])
    fields = getattr(parent, "model_fields", None)
    if not fields or loc[-1] not in fields:
        return False
    return typing.get_origin(_unwrap(fields[loc[-1]].annotation)) in (dict, Dict)


def documented_keys(model: type, prefix: str = "") -> List[str]:
    """Dotted leaf keys of a schema (a mapping of sections contributes `name.<*>.field`), for docs and tests."""
    keys: List[str] = []
    for name, field in model.model_fields.items():
        annotation = _unwrap(field.annotation)
        path = f"{prefix}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += documented_keys(annotation, path + ".")
        elif typing.get_origin(annotation) in (dict, Dict) and _is_section(typing.get_args(annotation)[1]):
            keys += documented_keys(_unwrap(typing.get_args(annotation)[1]), path + ".<*>.")
        else:
            keys.append(path)
    return keys


def _is_section(annotation: Any) -> bool:
    inner = _unwrap(annotation)
    return isinstance(inner, type) and issubclass(inner, BaseModel)


IdentifierKeys = AfterValidator(_identifier_keys)
