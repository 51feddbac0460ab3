"""From run directories to registry entries and back: build an entry, rebuild them all, verify one.

A run directory describes itself (metadata.yaml, config.yaml, best_model.pth), which is what makes the
registry a derived index: nothing in it is lost for good while the run directories exist.
"""

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from src.common.checkpoint import file_sha256
from src.common.errors import UserError
from src.common.run_dir import BEST_CHECKPOINT, CONFIG_FILE, METADATA_FILE

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# metadata.yaml keys copied into the entry's `metadata` (what a user needs to judge and rerun a model).
ENTRY_METADATA_KEYS = ("pytorch_version", "torchvision_version", "ultralytics_version", "numpy_version",
                       "python_version", "git_commit", "git_branch", "git_dirty", "device", "hostname", "seed")


@dataclass
class RebuildReport:
    """What `ModelRegistry.rebuild` did."""

    outputs_dir: Path
    entries: List[dict] = field(default_factory=list)
    skipped: List[Tuple[Path, str]] = field(default_factory=list)  # (run dir, why it was not registered)
    moved_aside: Optional[Path] = None  # where a corrupt registry file went
    dropped: List[str] = field(default_factory=list)  # run_ids that were registered but have no completed run dir


@dataclass
class VerifyResult:
    """One entry's checks; each field is "ok" or what is wrong."""

    run_id: str
    checkpoint: str
    sha256: str
    config_hash: str

    @property
    def ok(self) -> bool:
        return self.checkpoint == self.sha256 == self.config_hash == "ok"

    @property
    def problems(self) -> List[str]:
        return [f"{name}: {value}" for name, value in
                (("checkpoint", self.checkpoint), ("sha256", self.sha256), ("config_hash", self.config_hash))
                if value != "ok"]


def build_entry(run_dir) -> dict:
    """The registry entry of a completed run, from its metadata.yaml and config.yaml (no checkpoint loading).

    Raises UserError when the directory is not a completed street-scene run.
    """
    from src.common.yaml_io import load_yaml

    run_dir = Path(run_dir).expanduser().resolve()
    meta_path = run_dir / METADATA_FILE
    if not meta_path.is_file():
        raise UserError(f"{meta_path} not found: {run_dir} is not a street-scene run directory; "
                        "pass a directory created by `street-scene train`")
    meta = load_yaml(meta_path)
    if not isinstance(meta, dict):
        raise UserError(f"{meta_path} is not a mapping; the run directory is damaged")
    status = meta.get("status")
    if status != "completed":
        raise UserError(f"run {run_dir.name} has status {status!r} in {meta_path}; only completed runs are "
                        "registered (finish the run or train again)")
    result = meta.get("result")
    if not isinstance(result, dict):
        raise UserError(f"{meta_path} has no `result` section; the run did not finish writing its metadata")
    checkpoint = _confined_checkpoint(run_dir, result.get("checkpoint") or BEST_CHECKPOINT, meta_path)
    config_path = run_dir / CONFIG_FILE
    sha = result.get("checkpoint_sha256") or (file_sha256(checkpoint) if checkpoint.is_file() else None)
    return {
        "run_id": meta.get("run_id") or run_dir.name,
        "task": meta.get("subtask"),
        "config_hash": meta.get("config_hash") or config_file_hash(config_path),
        "checkpoint_path": str(checkpoint),
        "metrics": result.get("metrics") or {},
        "timestamp": _iso(meta.get("finished_at") or meta.get("started_at")),
        "metadata": {key: meta.get(key) for key in ENTRY_METADATA_KEYS},
        "run_dir": str(run_dir),
        "checkpoint_sha256": sha,
        "config_path": str(config_path),
        "dataset": meta.get("dataset_fingerprints"),
        "status": status,
    }


def _confined_checkpoint(run_dir: Path, name: object, meta_path: Path) -> Path:
    """`run_dir / name` for a plain file name whose real path stays inside the run dir.

    metadata.yaml is data, not a pointer anyone may aim: a registry entry must never send `verify`, a
    download or a deployment to `../../etc/passwd` or another run's weights.
    """
    plain = isinstance(name, str) and name not in (".", "..") and Path(name).name == name
    if not plain or "\\" in name or "\0" in name:  # backslash: a Windows-style path; NUL: no file has it
        raise UserError(f"{meta_path}: result.checkpoint {name!r} is not a file name inside the run directory; "
                        f"the run directory is damaged (expected e.g. {BEST_CHECKPOINT!r})")
    checkpoint = run_dir / name
    try:
        target = checkpoint.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
        raise UserError(f"{meta_path}: checkpoint {checkpoint} cannot be resolved ({exc})") from None
    if not target.is_relative_to(run_dir):  # a symlink pointing out of the run dir
        raise UserError(f"{meta_path}: checkpoint {checkpoint} leads outside the run directory (to {target}); "
                        "replace the link with the file itself")
    return checkpoint


def collect_entries(outputs_dir, normalize: Callable[[dict], dict]) -> RebuildReport:
    """Entries for every completed run dir directly under `outputs_dir`; the rest are reported as skipped."""
    from src.common.run_dir import output_root

    root = output_root(Path(outputs_dir) if outputs_dir is not None else None)
    if not root.is_dir():
        raise UserError(f"outputs directory {root} not found; pass --outputs DIR (or set STREET_SCENE_OUTPUT_DIR) "
                        "to the folder that holds your run directories")
    report = RebuildReport(outputs_dir=root)
    seen = {}
    for run_dir in sorted(p for p in root.iterdir() if p.is_dir() and (p / METADATA_FILE).is_file()):
        try:
            entry = normalize(build_entry(run_dir))
        except (UserError, ValueError) as exc:
            report.skipped.append((run_dir, str(exc)))
            continue
        except RecursionError:  # a hand-made metadata.yaml or config.yaml nested thousands of levels deep
            report.skipped.append((run_dir, f"{METADATA_FILE} or {CONFIG_FILE} is nested too deeply to read"))
            continue
        except OSError as exc:  # one unreadable run dir must not stop the others from being recovered
            report.skipped.append((run_dir, f"cannot read {exc.filename or run_dir}: {exc.strerror}"))
            continue
        if entry["run_id"] in seen:
            report.skipped.append((run_dir, f"run_id {entry['run_id']!r} already taken by {seen[entry['run_id']]}"))
            continue
        seen[entry["run_id"]] = run_dir
        report.entries.append(entry)
    return report


def verify_entry(entry: dict) -> VerifyResult:
    """Check one stored entry; every problem (even a hand-edited value of the wrong type) is reported, not raised."""
    checkpoint = Path(entry["checkpoint_path"])
    if checkpoint.is_file():
        checkpoint_state, sha_state = "ok", _sha_state(checkpoint, entry.get("checkpoint_sha256"))
    else:
        checkpoint_state, sha_state = f"missing: {checkpoint}", "not checked"
    config_path = Path(entry.get("config_path") or checkpoint.parent / CONFIG_FILE)
    try:
        actual_hash = config_file_hash(config_path)
        config_state = "ok" if actual_hash == entry["config_hash"] else \
            f"mismatch (config.yaml {actual_hash}, registry {entry['config_hash']})"
    except UserError as exc:
        config_state = str(exc)
    return VerifyResult(entry["run_id"], checkpoint_state, sha_state, config_state)


def _sha_state(checkpoint: Path, recorded: object) -> str:
    if recorded is None or recorded == "":
        return "no checkpoint_sha256 recorded"
    if not isinstance(recorded, str) or not _SHA256_HEX.fullmatch(recorded):
        shown = repr(recorded) if len(repr(recorded)) <= 40 else repr(recorded)[:37] + "..."
        return f"invalid checkpoint_sha256 {shown} in the registry (expected 64 hex digits)"
    try:
        actual = file_sha256(checkpoint)
    except OSError as exc:
        return f"unreadable checkpoint ({exc.strerror})"
    return "ok" if actual == recorded else f"mismatch (file {actual[:12]}, registry {recorded[:12]})"


def config_file_hash(config_path: Path) -> str:
    """Hash of a saved config.yaml exactly as written (unlike ConfigManager, no env seed is applied)."""
    from src.common.config_manager import compute_config_hash
    from src.common.yaml_io import load_yaml

    config = load_yaml(config_path)
    if not isinstance(config, dict):
        raise UserError(f"{config_path} is not a YAML mapping; the run directory is damaged")
    return compute_config_hash(config)


def _iso(value) -> Optional[str]:
    # Canonical ISO 8601 ("T" separator) whether metadata.yaml holds a datetime, "2024-01-15 14:30:22" or
    # "2024-01-15T14:30:22"; anything unparseable is passed on for register() to reject with a clear message.
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if value is None:
        return None
    try:
        return datetime.fromisoformat(str(value)).isoformat()
    except ValueError:
        return str(value)
