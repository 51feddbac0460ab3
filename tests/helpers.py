"""Helpers for tests that run our scripts as a user would (in a subprocess, network blocked)."""

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NETBLOCK_DIR = Path(__file__).resolve().parent / "netblock"


def subprocess_env(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(NETBLOCK_DIR), str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env["YOLO_OFFLINE"] = "1"
    env["YOLO_AUTOINSTALL"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    # Let subprocesses reuse compiled bytecode of our modules (__pycache__ is git-ignored): with
    # PYTHONDONTWRITEBYTECODE set, every one of the suite's hundreds of interpreters compiled src/ again.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if extra:
        env.update(extra)
    return env


def run_script(script, *args, cwd=None, env=None, timeout=600):
    """Run `python scripts/<script> args...` (or any argv list when script is None); return CompletedProcess."""
    argv = [sys.executable, str(REPO_ROOT / "scripts" / script), *map(str, args)]
    return subprocess.run(argv, cwd=cwd or REPO_ROOT, env=subprocess_env(env), capture_output=True,
                          text=True, timeout=timeout)


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run `street-scene args...` through `python -m src.cli.main`."""
    argv = [sys.executable, "-m", "src.cli.main", *map(str, args)]
    return subprocess.run(argv, cwd=cwd or REPO_ROOT, env=subprocess_env(env), capture_output=True,
                          text=True, timeout=timeout)


def start_until_ready(code: str, *args, ready: Path, timeout: float = 60.0) -> subprocess.Popen:
    """Run `python -c code *args` from the repo root and return once it has created the file `ready` (a child
    paused at the moment a test wants to kill it); fails the test if the child dies first or is too slow."""
    import time

    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO_ROOT, env=subprocess_env(),
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return proc
