"""Training-state pieces that survive `torch.load(weights_only=True)`: RNG states and CPU copies.

weights_only loading accepts tensors, dicts, lists, tuples, str/int/float/bool/None, and rejects NumPy arrays,
so NumPy's RNG state is stored as a dict of plain values with its key array as an int64 tensor.
"""

import random
from typing import Any, Dict


def capture_rng_state() -> Dict[str, Any]:
    """Python, NumPy, torch CPU and (when initialised) CUDA generator states of this process."""
    import numpy as np
    import torch

    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of capture_rng_state (accepts lists where tuples were, as serialisers may convert them)."""
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npy = state["numpy"]
    np.random.set_state((npy["name"], np.asarray(npy["keys"], dtype=np.int64).astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8).cpu() for s in state["cuda"]])


def cpu_copy(obj):
    """Deep copy with every tensor detached and cloned to CPU (the live optimizer state keeps changing)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj
