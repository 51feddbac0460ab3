"""One call that makes a process deterministic, and the DataLoader pieces that keep workers deterministic.

Nothing here runs at import. `seed_everything` returns the settings it put in force so the run's metadata
records what was actually active, not what was asked for.
"""

import contextlib
import os
import random
from typing import Any, Dict, Iterator

# Set by seed_everything; restored by determinism_restored.
_DETERMINISM_ENV = ("CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED")


def seed_everything(seed: int, deterministic: bool = True) -> Dict[str, Any]:
    """Seed Python, NumPy and torch (CPU + CUDA); optionally force deterministic kernels.

    CUBLAS_WORKSPACE_CONFIG must be set before the first cuBLAS call, so call this before building models.
    """
    import torch

    os.environ["PYTHONHASHSEED"] = str(seed)  # only affects child processes; recorded for completeness
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    seed_rngs(seed)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic and torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(deterministic)
    return determinism_settings()


def seed_rngs(seed: int) -> None:
    """Seed Python, NumPy and torch (every device) from one integer; no global switches change."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too


def determinism_settings() -> Dict[str, Any]:
    """The determinism-relevant settings in force right now (recorded in metadata)."""
    import torch

    return {
        "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled()),
        "deterministic_warn_only": bool(torch.is_deterministic_algorithms_warn_only_enabled()),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "torch_num_threads": int(torch.get_num_threads()),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def seed_worker(worker_id: int) -> None:
    """worker_init_fn: derive each worker's Python/NumPy seeds from torch's per-worker seed."""
    import numpy as np
    import torch

    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


@contextlib.contextmanager
def determinism_restored() -> Iterator[None]:
    """Put every global determinism switch back as it was when the block ends (torch flags, cuDNN, the fill of
    uninitialized memory, and the environment variables seed_everything sets): library calls must not leave
    the process changed."""
    import torch
    import torch.utils.deterministic

    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.utils.deterministic.fill_uninitialized_memory)
    env = {key: os.environ.get(key) for key in _DETERMINISM_ENV}
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2], flags[3]
        torch.utils.deterministic.fill_uninitialized_memory = flags[4]
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def process_settings_restored(num_threads: int) -> Iterator[None]:
    """Run a training with `num_threads` torch threads, then put the process's global numeric settings back.

    CPU kernels may split reductions by thread, so the thread count is pinned for the run (and recorded) rather
    than inherited from whatever ran before in the process; the API must not leave determinism flags behind.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        with determinism_restored():
            yield
    finally:
        torch.set_num_threads(threads)


def default_num_threads() -> int:
    """One torch thread per CPU the process may use: the same on every run on this machine."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
