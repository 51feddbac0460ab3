"""Before a run is re-trained: what differs now from what it recorded (code, data, environment, config).

Every check returns `key: recorded -> now` lines, empty when nothing differs. Only code and data differences
stop a reproduction (the caller decides); package, device and determinism differences are reported, because
they are exactly what a reproduction is meant to test.
"""

import hashlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from src.common.dictdiff import format_changes
from src.common.errors import UserError
from src.common.run_dir import ENVIRONMENT_FILE, GIT_DIFF_FILE, RunDir, parse_packages

# Recorded metadata keys per category (see docs/ARCHITECTURE.md, metadata.yaml).
VERSION_KEYS = ("python_version", "pytorch_version", "torchvision_version", "ultralytics_version", "numpy_version",
                "torchmetrics_version", "street_scene_version")
DEVICE_KEYS = ("device", "cuda_available", "cuda_version", "cudnn_version", "gpu_names", "cpu_model")


def field_differences(recorded: Dict[str, Any], current: Dict[str, Any], keys) -> List[str]:
    """`key: recorded -> now` for each key whose values differ (a key the run did not record is skipped)."""
    return format_changes([(k, recorded[k], current.get(k)) for k in keys
                           if k in recorded and recorded[k] != current.get(k)])


def code_differences(recorded: Dict[str, Any], recorded_diff: Optional[str], current: Dict[str, Any],
                     current_diff: Optional[str]) -> List[str]:
    """Git commit, dirty state and, when both are dirty, the uncommitted changes themselves."""
    if "git_commit" not in recorded:
        return ["the run recorded no git commit (an older street-scene): its code cannot be verified"]
    lines = field_differences(recorded, current, ("git_commit", "git_dirty"))
    if not lines and recorded.get("git_dirty") and current.get("git_dirty"):
        if recorded_diff is None:
            lines.append(f"the run's code was uncommitted and it has no {GIT_DIFF_FILE}: cannot verify it")
        elif _sha(recorded_diff) != _sha(current_diff or ""):
            lines.append(f"uncommitted changes differ from the run's {GIT_DIFF_FILE} "
                         f"(sha256 {_sha(recorded_diff)[:12]} -> {_sha(current_diff or '')[:12]})")
    return lines


def code_notes(recorded: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
    """What cannot be checked but is no difference either (a deployment without git, then and now)."""
    if "git_commit" in recorded and recorded["git_commit"] is None and current.get("git_commit") is None:
        return ["no git repository then or now: the code is identified only by street_scene_version"]
    return []


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def package_differences(recorded_lines: Optional[str], current_lines: str) -> List[str]:
    """`name: old -> new` between two environment.txt texts (`name==version` lines)."""
    if recorded_lines is None:
        return []
    old, new = parse_packages(recorded_lines), parse_packages(current_lines)
    return [f"package {name}: {old.get(name, '<missing>')} -> {new.get(name, '<missing>')}"
            for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]


def current_code(run_dir: Path, meta: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    """(differences, notes) between the run's recorded git state and the code that runs now."""
    from src.common.metadata import git_info

    fields, diff = git_info()
    recorded_diff = RunDir(run_dir).read_text(GIT_DIFF_FILE)
    return code_differences(meta, recorded_diff, fields, diff), code_notes(meta, fields)


def current_environment(run_dir: Path, meta: Dict[str, Any], device: str, seed: int) -> Dict[str, List[str]]:
    """Package versions, device/hardware and determinism settings (as the runner will set them) vs recorded."""
    from src.common.metadata import environment_lines, hardware_info, package_versions
    from src.common.seeding import default_num_threads, process_settings_restored, seed_everything

    # As the runner will (thread count pinned, then seeded): the settings the re-run is going to have, whatever
    # ran before in this process.
    with process_settings_restored(default_num_threads()):  # also puts the determinism switches back
        settings = seed_everything(seed)
    versions = field_differences(meta, package_versions(), VERSION_KEYS)
    packages = package_differences(RunDir(run_dir).read_text(ENVIRONMENT_FILE), environment_lines())
    recorded_det = meta.get("determinism") or {}
    return {
        "environment": versions + [p for p in packages if not _covered(p, versions)],
        "device": field_differences(meta, hardware_info(device), DEVICE_KEYS),
        "determinism": field_differences(recorded_det, settings, sorted(recorded_det)),
    }


def _covered(package_line: str, version_lines: List[str]) -> bool:
    # torch 2.1 -> 2.2 shows once as pytorch_version, not again as `package torch`
    name = package_line.split(":", 1)[0].removeprefix("package ").lower()
    aliases = {"torch": "pytorch_version", "street-scene": "street_scene_version"}
    key = aliases.get(name, name.replace("-", "_") + "_version")
    return any(line.startswith(key + ":") for line in version_lines)


def data_paths(meta: Dict[str, Any], run_ref: str) -> Tuple[str, str, Optional[str]]:
    """(train, val, data_yaml) as the run was given them; relative ones are resolved against the run's cwd."""
    data = meta.get("data")
    if not isinstance(data, dict):
        raise UserError(f"run {run_ref} recorded no data paths (metadata.yaml has no 'data'); it cannot be "
                        "re-trained automatically: train again with scripts/train.py")
    cwd = Path(meta.get("cwd") or ".")
    paths = []
    for role in ("train", "val"):
        spec = data.get(f"{role}_spec") or data.get(role)
        if not spec:
            raise UserError(f"run {run_ref} recorded no {role} data path in metadata.yaml 'data'")
        paths.append(_existing(cwd, str(spec), f"{role} data", run_ref))
    data_yaml = data.get("data_yaml")
    return paths[0], paths[1], _existing(cwd, str(data_yaml), "data yaml", run_ref) if data_yaml else None


def _existing(cwd: Path, spec: str, what: str, run_ref: str) -> str:
    path = Path(spec).expanduser()
    path = path if path.is_absolute() else cwd / path
    if not path.exists():
        raise UserError(f"run {run_ref} trained on {what} {path}, which no longer exists; restore it there to "
                        "reproduce the run")
    return str(path)


def data_differences(meta: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
    """Recorded dataset fingerprints vs the ones computed now."""
    from src.common.fingerprint import compare_split_fingerprints

    recorded = meta.get("dataset_fingerprints")
    if not recorded:
        return ["the run recorded no dataset fingerprints (an older street-scene): its data cannot be verified"]
    return compare_split_fingerprints(recorded, current)


def config_differences(effective: Any, trained: Optional[Dict[str, Any]]) -> List[str]:
    """Differences from the config the run trained with (its checkpoint's) to the one the re-run uses."""
    if trained is None:
        return []
    return format_changes(effective.diff(trained))
