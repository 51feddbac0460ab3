"""Reading class names out of dataset YAMLs (ultralytics data-yaml style), shared by detection and segmentation."""

from pathlib import Path

from src.common.errors import UserError


def read_dataset_yaml(path) -> dict:
    """Load a dataset YAML as a mapping; refuse `download:`, which ultralytics would run as a URL, shell or Python."""
    from src.common.yaml_io import load_yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"data yaml {path} not found; pass an existing file, e.g. configs/datasets/<task>.yaml")
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise UserError(f"data yaml {path} must be a mapping with a 'names:' key, got {type(data).__name__}")
    if "download" in data:
        raise UserError(f"data yaml {path} has a 'download:' key, which ultralytics would execute; "
                        "remove it and download the dataset yourself")
    return data


def class_names(path) -> list[str]:
    """Class names (index = class id) of the dataset YAML at `path`; refuses `download:`."""
    return parse_class_names(read_dataset_yaml(path), path)


def parse_class_names(data: dict, source) -> list[str]:
    """`names` as a list (ids 0..n-1), from a list or a dict {id: name}; check `nc` when present."""
    names = data.get("names")
    if names is None:
        raise UserError(f"data yaml {source} has no 'names:'; list the class names, e.g. names: {{0: car, 1: truck}}")
    if isinstance(names, dict):
        keys = list(names)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in keys) or sorted(keys) != list(
                range(len(keys))):
            raise UserError(f"data yaml {source}: 'names' keys must be the class ids 0..{len(keys) - 1}, got {keys}")
        names = [names[i] for i in range(len(keys))]
    if not isinstance(names, list) or not names:
        raise UserError(f"data yaml {source}: 'names' must be a non-empty list or a dict {{id: name}}")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise UserError(f"data yaml {source}: every class name must be a non-empty string, got {bad[0]!r}")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UserError(f"data yaml {source}: class name {dup!r} appears twice; class names must be unique")
    if "nc" in data and (isinstance(data["nc"], bool) or data["nc"] != len(names)):
        raise UserError(f"data yaml {source}: 'nc: {data['nc']}' does not match the {len(names)} names; "
                        "fix nc or remove it")
    return names
