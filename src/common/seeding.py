"""One call that makes a process deterministic, and the DataLoader pieces that keep workers deterministic.

Nothing here runs at import. `seed_everything` returns the settings it put in force so the run's metadata
records what was actually active, not what was asked for.
"""

import contextlib
import os
import random
from typing import Any, Dict, Iterator


def seed_everything(seed: int, deterministic: bool = True) -> Dict[str, Any]:
    """Seed Python, NumPy and torch (CPU + CUDA); optionally force deterministic kernels.

    CUBLAS_WORKSPACE_CONFIG must be set before the first cuBLAS call, so call this before building models.
    """
    import numpy as np
    import torch

    os.environ["PYTHONHASHSEED"] = str(seed)  # only affects child processes; recorded for completeness
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic and torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(deterministic)
    return determinism_settings()


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


def dataloader_generator(seed: int):
    """A torch.Generator for DataLoader shuffling, independent of the global RNG."""
    import torch

    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def seed_worker(worker_id: int) -> None:
    """worker_init_fn: derive each worker's Python/NumPy seeds from torch's per-worker seed."""
    import numpy as np
    import torch

    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


@contextlib.contextmanager
def process_settings_restored(num_threads: int) -> Iterator[None]:
    """Run a training with `num_threads` torch threads, then put the process's global numeric settings back.

    CPU kernels may split reductions by thread, so the thread count is pinned for the run (and recorded) rather
    than inherited from whatever ran before in the process; the API must not leave determinism flags behind.
    """
    import torch

    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        threads, det, warn_only, cudnn_det, cudnn_bench, cublas = saved
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_det, cudnn_bench
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


def default_num_threads() -> int:
    """One torch thread per CPU the process may use: the same on every run on this machine."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
