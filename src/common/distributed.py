"""torch.distributed support for `torchrun --nproc_per_node=N`: gloo on CPU, nccl on CUDA.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR/PORT); without them everything here is a no-op and
the process is rank 0 of 1.
"""

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: str
    created_group: bool  # True when init_distributed() started the group (so the caller should clean it up)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str = "cpu") -> DistContext:
    """Join the torchrun process group when launched by torchrun (idempotent); pick this process's device."""
    import torch
    import torch.distributed as dist

    world_size = env_world_size()
    if world_size <= 1:
        return DistContext(0, 1, 0, device, created_group=False)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = str(device).startswith("cuda")
    if cuda:
        # One GPU per process: the local rank picks it, whatever index the config named.
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        created = True
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, created_group=created)


def is_initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank: the group's when one is running, else torchrun's RANK, else 0."""
    if is_initialized():
        import torch.distributed as dist

        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def get_world_size() -> int:
    """Processes in the running group, else torchrun's WORLD_SIZE, else 1."""
    if is_initialized():
        import torch.distributed as dist

        return dist.get_world_size()
    return env_world_size()


def barrier() -> None:
    if is_initialized():
        import torch.distributed as dist

        dist.barrier()


def cleanup() -> None:
    if is_initialized():
        import torch.distributed as dist

        dist.destroy_process_group()


def wrap_model(model, ctx: DistContext):
    """DDP-wrap when distributed (gradients are averaged across processes in backward); else the model itself."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.local_rank] if ctx.device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=device_ids)


def broadcast_buffers(model) -> None:
    """Give every process rank 0's BatchNorm statistics, so all evaluate (and would save) the same model."""
    if not is_initialized():
        return
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def all_reduce_sum(values, device):
    """Sum a list of floats over processes (a no-op for one process)."""
    import torch

    if not is_initialized():
        return list(values)
    import torch.distributed as dist

    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather_object(obj) -> list:
    """Every process's `obj`, in rank order ([obj] for one process)."""
    if not is_initialized():
        return [obj]
    import torch.distributed as dist

    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj):
    """Rank 0's `obj` on every process (identity without a process group)."""
    if not is_initialized():
        return obj
    import torch.distributed as dist

    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
