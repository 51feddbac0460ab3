"""Reading a run directory's files for reports: fast, and never trusting what they hold.

The report reads metadata.yaml and config.yaml of every run (1,000 runs in a few seconds), so YAML is parsed with
libyaml's C parser under exactly the rules of src.common.yaml_io (YAML 1.2 floats, no dates, duplicate keys and
alias bombs refused). Every problem becomes a `ReadProblem` string for the page, not an exception.
"""

import csv
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from src.common import yaml_io
from src.common.errors import UserError
from src.common.run_dir import EVALUATIONS_DIR, EXPORTS_FILE

_CSV_LIMIT = 4 * 1024 * 1024  # a metrics.csv is a few KB; anything this big is not ours
_JSON_LIMIT = 4 * 1024 * 1024
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML was built with it


class _FastLoader(_BaseLoader):
    """yaml_io's safe loader rules on the C parser (same resolvers and constructors)."""


_FastLoader.yaml_implicit_resolvers = yaml_io._Loader.yaml_implicit_resolvers  # noqa: SLF001 (same rules)
_FastLoader.yaml_constructors = yaml_io._Loader.yaml_constructors  # noqa: SLF001


def read_yaml(path: Path) -> Tuple[Any, Optional[str]]:
    """(data, None) or (None, problem) for a YAML file of a run."""
    try:
        size = path.stat().st_size
        if size > yaml_io.MAX_YAML_BYTES:
            return None, f"{path.name} is {size} bytes, too big to be a run file"
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, f"{path.name} missing"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot read {path.name}: {exc}"
    loader = _FastLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, f"{path.name} is empty"
        if "*" in text:  # only an alias (*name) can expand; the walk is most of the cost of a plain file
            yaml_io._check_alias_expansion(node, str(path))  # noqa: SLF001 (the same alias-bomb guard)
        return loader.construct_document(node), None
    except yaml.YAMLError as exc:
        return None, f"invalid YAML in {path.name}: {str(exc).splitlines()[0]}"
    except UserError as exc:
        return None, str(exc)
    except RecursionError:
        return None, f"{path.name} is nested too deeply"
    finally:
        loader.dispose()


def read_json(path: Path) -> Tuple[Any, Optional[str]]:
    """(data, None) or (None, problem); NaN/Infinity constants are refused like any other non-JSON."""
    try:
        if path.stat().st_size > _JSON_LIMIT:
            return None, f"{path.name} is too big to be a run file"
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant), None
    except FileNotFoundError:
        return None, f"{path.name} missing"
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, f"cannot read {path.name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_curves(path: Path, digits: int = 4) -> Tuple[Dict[str, List[Optional[float]]], Optional[str]]:
    """metrics.csv as {column: [value per row]} (numbers rounded to `digits` significant digits, non-numbers
    None); ({}, problem) when unreadable."""
    try:
        if path.stat().st_size > _CSV_LIMIT:
            return {}, f"{path.name} is too big to be a metrics file"
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        return {}, f"{path.name} missing"
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return {}, f"cannot read {path.name}: {exc}"
    if not rows:
        return {}, f"{path.name} is empty"
    header, body = rows[0], rows[1:]
    columns: Dict[str, List[Optional[float]]] = {name: [] for name in header}
    for row in body:
        for name, cell in zip(header, row + [""] * (len(header) - len(row))):
            columns[name].append(_number(cell, digits))
    return columns, None


def _number(cell: str, digits: int) -> Optional[float]:
    if cell.isdigit():  # epochs, counts
        return int(cell)
    try:
        value = float(cell)
    except ValueError:
        return None
    return float("%.*g" % (digits, value)) if math.isfinite(value) else None


def read_exports(run_dir: Path) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    """<run dir>/exports.json (a list of export records), ([], None) when there is none."""
    path = run_dir / EXPORTS_FILE
    if not path.exists():
        return [], None
    data, problem = read_json(path)
    if problem:
        return [], problem
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        return [], f"{EXPORTS_FILE} is not a list of export records"
    return data, None


def evaluation_files(run_dir: Path) -> List[Path]:
    folder = run_dir / EVALUATIONS_DIR
    try:
        return sorted(p for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []
