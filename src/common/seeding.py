"""One call that makes a process deterministic, and the DataLoader pieces that keep workers deterministic.

Nothing here runs at import. `seed_everything` returns the settings it put in force so the run's metadata
records what was actually active, not what was asked for.
"""

import os
import random
from typing import Any, Dict


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
