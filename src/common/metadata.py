"""What a run records about where it ran: versions, hardware, git state, command, times.

`metadata.yaml` is written at the start of a run (status `running`) and updated at the end, so a crashed
run still says what it was. The same dict is embedded in checkpoints and registry entries.
"""

import os
import platform
import shlex
import socket
import subprocess
import sys
from datetime import datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from src.common.atomic import atomic_write_text
from src.common.errors import UserError
from src.common.run_dir import METADATA_FILE
from src.common.yaml_io import dump_yaml, load_yaml

CODE_ROOT = Path(__file__).resolve().parents[2]  # the street-scene checkout whose code runs
_PACKAGES = {
    "pytorch_version": "torch",
    "torchvision_version": "torchvision",
    "ultralytics_version": "ultralytics",
    "numpy_version": "numpy",
    "torchmetrics_version": "torchmetrics",
    "street_scene_version": "street-scene",
}


def now_iso() -> str:
    return datetime.now().isoformat(timespec="microseconds")


def package_versions() -> Dict[str, Optional[str]]:
    versions: Dict[str, Optional[str]] = {"python_version": platform.python_version()}
    for key, dist in _PACKAGES.items():
        try:
            versions[key] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            versions[key] = None
    return versions


def environment_lines() -> str:
    """`name==version` for every installed distribution, sorted: a pip freeze without running pip.

    Read from the `*.dist-info` folder names on sys.path (no file is opened), which is what pip freeze lists.
    """
    seen = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info") and "-" in name:
                dist, _, version = name[: -len(".dist-info")].partition("-")
                seen.setdefault(dist.lower().replace("_", "-"), f"{dist}=={version}")
    return "".join(line + "\n" for _, line in sorted(seen.items()))


def _git(args, cwd: Path) -> Optional[str]:
    try:
        # errors="replace": a diff of a non-UTF-8 file must not crash the run that records it
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, encoding="utf-8",
                             errors="replace", timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_info(repo: Optional[Path] = None) -> Tuple[Dict[str, Any], Optional[str]]:
    """(git fields, diff text or None) for `repo` (default CODE_ROOT). Outside a git repository the fields say
    so instead of failing."""
    repo = CODE_ROOT if repo is None else repo  # looked up at call time, so tests can point it elsewhere
    commit = _git(["rev-parse", "HEAD"], repo)
    if commit is None:
        inside = _git(["rev-parse", "--is-inside-work-tree"], repo)
        note = "git repository without commits" if inside else "not a git repository (or git not installed)"
        return {"git_commit": None, "git_branch": None, "git_dirty": None, "git_note": note}, None
    branch = (_git(["rev-parse", "--abbrev-ref", "HEAD"], repo) or "").strip() or None
    status = _git(["status", "--porcelain", "--untracked-files=normal"], repo) or ""
    dirty = bool(status.strip())
    diff = None
    if dirty:
        diff = _git(["diff", "HEAD", "--binary"], repo) or ""
        untracked = _git(["ls-files", "--others", "--exclude-standard"], repo) or ""
        if untracked.strip():
            diff += "\n# untracked files (not in the diff above):\n" + "".join(
                f"#   {line}\n" for line in untracked.splitlines()
            )
    return {"git_commit": commit.strip(), "git_branch": branch, "git_dirty": dirty}, diff


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_info(device: str) -> Dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    info = {
        "device": device,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpu_names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "num_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "os": platform.platform(),
    }
    return info


def collect_metadata(*, device: str, determinism: Dict[str, Any]) -> Tuple[Dict[str, Any], Optional[str]]:
    """Environment metadata for a run (without run-specific fields) and the git diff if the code is dirty."""
    git_fields, diff = git_info()
    meta: Dict[str, Any] = {}
    meta.update(package_versions())
    meta.update(hardware_info(device))
    meta.update(git_fields)
    meta["command"] = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    meta["cwd"] = os.getcwd()
    meta["determinism"] = determinism
    return meta, diff


def read_metadata(run_dir: Path) -> Dict[str, Any]:
    data = load_yaml(Path(run_dir) / METADATA_FILE)
    if not isinstance(data, dict):
        raise UserError(f"{Path(run_dir) / METADATA_FILE} is not a mapping; the run directory is damaged")
    return data


def write_metadata(run_dir: Path, meta: Dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / METADATA_FILE, dump_yaml(meta))


def update_metadata(run_dir: Path, **fields: Any) -> Dict[str, Any]:
    meta = read_metadata(run_dir)
    meta.update(fields)
    write_metadata(run_dir, meta)
    return meta
