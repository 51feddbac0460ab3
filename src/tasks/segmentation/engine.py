"""Our deterministic segmentation training loop (plain arguments; the run lifecycle lives in src.pipelines).

Determinism: the data order is a function of (seed, epoch) and each sample's augmentation of (seed, epoch, index);
global RNGs (dropout) are seeded once at a fresh start and carried in the train state; deterministic algorithms
are on for the duration of the call only. Hence resuming at an epoch boundary from `get_train_state()` ends with
the same weights, bit for bit, as a run that was never interrupted (same device, world size and versions).
"""

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

from src.common import distributed as dist_utils
from src.common.checkpoint import to_fp32_cpu
from src.common.errors import RunFailedError, UserError
from src.common.seeding import seed_rngs
from src.common.report import warn
from src.tasks.segmentation.dataset import SegmentationDataset, make_eval_loader, make_train_loader
from src.tasks.segmentation.metrics import SegmentationMetrics
from src.tasks.segmentation.progress import ProgressBar
from src.tasks.segmentation.schema import OPTIMIZERS, SCHEDULERS  # the config schema owns the lists
from src.tasks.segmentation.state import capture_rng_state, cpu_copy, restore_rng_state
from src.tasks.segmentation.transforms import TrainAugment

__all__ = ["train_segmentation", "TrainSettings", "evaluate_segmentation", "OPTIMIZERS", "SCHEDULERS"]

TRAIN_STATE_FORMAT = "segmentation-train-state/1"


@contextmanager
def deterministic_mode(device_type: str):
    """Deterministic kernels for the duration of the block; the caller's settings come back afterwards."""
    import warnings

    import torch
    import torch.utils.deterministic

    from src.common.seeding import determinism_restored

    cuda = device_type == "cuda"
    with determinism_restored():
        if cuda:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reads it at its first call
        # Strict on CPU. On CUDA some kernels these models use may lack a deterministic version (NLLLoss forward
        # does, in the reduction, which leaves gradients exact; interpolate/adaptive-pool backward did in older
        # torch): there they warn, once each, instead of failing the run.
        torch.use_deterministic_algorithms(True, warn_only=cuda)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        # Filling every torch.empty() with NaN only guards against kernels that read memory they never wrote; our
        # ops write their outputs, and the fill costs throughput on every allocation.
        torch.utils.deterministic.fill_uninitialized_memory = False
        with warnings.catch_warnings():
            warnings.filterwarnings("once", message=".*does not have a deterministic implementation.*")
            yield {"deterministic_algorithms": True, "warn_only": cuda, "cudnn_deterministic": True,
                   "cudnn_benchmark": False, "fill_uninitialized_memory": False}


def build_optimizer(name: str, params, lr: float, weight_decay: float):
    import torch

    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise UserError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def build_scheduler(name: str, optimizer, total_steps: int):
    from torch.optim import lr_scheduler

    if name == "poly":
        return lr_scheduler.PolynomialLR(optimizer, total_iters=total_steps, power=0.9)
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if name == "constant":
        return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    raise UserError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")


def segmentation_loss(logits, masks, ignore_index: int):
    """Mean cross-entropy over labelled pixels; 0 (not NaN) for a crop with none."""
    import torch.nn.functional as F

    total = F.cross_entropy(logits, masks, ignore_index=ignore_index, reduction="sum")
    return total / (masks != ignore_index).sum().clamp(min=1)


@dataclass(frozen=True)
class TrainSettings:
    """The training hyper-parameters (segmentation.training, and evaluation.batch_size for validation)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    scheduler: str = "poly"
    crop_size: Union[int, Tuple[int, int]] = (128, 256)
    scale_range: Tuple[float, float] = (0.5, 2.0)
    hflip_prob: float = 0.5
    workers: int = 0
    eval_batch_size: Optional[int] = None  # default: batch_size


@dataclass(frozen=True)
class Loop:
    """The plain settings every epoch of one call shares."""

    epochs: int
    batch_size: int
    eval_batch_size: int
    seed: int
    workers: int
    ignore_index: int
    show_progress: bool


def train_segmentation(*, model, train_items, val_items, num_classes: int, ignore_index: int,
                       settings: TrainSettings, seed: int, device: str,
                       on_epoch: Callable[[int, dict, Callable[[], dict]], None],
                       resume_state: Optional[dict] = None, progress: bool = True,
                       class_names: Optional[Sequence[str]] = None, stop_after: Optional[int] = None) -> dict:
    """Train `model` in place for `settings.epochs` (continuing from `resume_state` when given); see module
    docstring.

    `stop_after` ends training after that epoch while every schedule still spans `epochs` (cheap reproduction
    of a run's first epochs). Validation runs at full resolution in batches of `eval_batch_size` (default
    `batch_size`). A non-finite training loss, validation loss or mIoU fails the call with RunFailedError: on one
    process at the first such step, under torchrun at the end of that epoch (every process sees the same sums).

    After each epoch the main process calls `on_epoch(epoch_1based, metrics, get_train_state)`; the callback runs
    RNG-neutral (states are restored after it). Returns `history` (metrics per epoch, resumed ones included),
    `best_epoch`/`best_val_metric` (by val/mIoU; None if no epoch had one), `final_metrics`, `determinism`,
    `world_size`. The best weights are the caller's to keep (from `on_epoch`): copying them here on every
    improvement served no one.
    """
    import torch

    if not train_items or not val_items:
        raise UserError("segmentation training needs at least one training and one validation image")
    if class_names is not None and len(class_names) != num_classes:
        raise UserError(f"{len(class_names)} class names given for {num_classes} classes; fix the data yaml")
    s = settings
    crop = (s.crop_size, s.crop_size) if isinstance(s.crop_size, int) else tuple(s.crop_size)
    ctx = dist_utils.init_distributed(device)
    try:
        loop = Loop(s.epochs, s.batch_size, s.eval_batch_size or s.batch_size, seed, s.workers, ignore_index,
                    progress and ctx.rank == 0)
        train_set = SegmentationDataset(train_items, TrainAugment(crop, ignore_index, tuple(s.scale_range),
                                                                  s.hflip_prob), seed)
        metrics = SegmentationMetrics(num_classes, ignore_index, class_names, ctx.device)
        with deterministic_mode(torch.device(ctx.device).type) as determinism:
            result = _fit(ctx, loop, s, model, train_set, val_items, metrics, on_epoch=on_epoch,
                          resume_state=resume_state, stop_after=stop_after)
        return {**result, "determinism": determinism, "world_size": ctx.world_size}
    finally:
        if ctx.created_group:
            dist_utils.cleanup()


def _fit(ctx, loop: Loop, settings: TrainSettings, model, train_set, val_items, metrics, *, on_epoch, resume_state,
         stop_after=None) -> dict:
    import torch

    device = torch.device(ctx.device)
    model.to(device)
    per_rank = math.ceil(len(train_set) / ctx.world_size)
    if per_rank < loop.batch_size:
        raise UserError(f"{len(train_set)} training images over {ctx.world_size} process(es) give {per_rank} per "
                        f"process, fewer than batch_size={loop.batch_size}; lower batch_size or add images")
    opt = build_optimizer(settings.optimizer, model.parameters(), settings.lr, settings.weight_decay)
    sched = build_scheduler(settings.scheduler, opt, total_steps=loop.epochs * (per_rank // loop.batch_size))
    book = {"start": 0, "history": [], "best_epoch": None, "best_metric": -math.inf}
    if resume_state is not None:
        _restore(resume_state, model, opt, sched, book, loop.seed, ctx)
    else:
        seed_rngs(loop.seed + ctx.rank)  # dropout masks differ per process, as they would on one big batch
    net = dist_utils.wrap_model(model, ctx)
    val_loader = make_eval_loader(val_items, batch_size=loop.eval_batch_size, workers=loop.workers,
                                  ignore_index=loop.ignore_index, rank=ctx.rank, world_size=ctx.world_size,
                                  pin_memory=device.type == "cuda")
    end = min(loop.epochs, stop_after) if stop_after else loop.epochs
    for epoch in range(book["start"], end):
        train_loss, last_lr = _train_epoch(net, train_set, opt, sched, ctx, loop, epoch)
        dist_utils.broadcast_buffers(model)
        row = {"train/loss": train_loss, **evaluate_model(model, val_loader, metrics, loop.ignore_index),
               "lr": last_lr}
        _check_finite(row, epoch + 1)
        book["history"].append(row)
        if not math.isnan(row["val/mIoU"]) and row["val/mIoU"] > book["best_metric"]:
            book["best_epoch"], book["best_metric"] = epoch + 1, row["val/mIoU"]
        rng = dist_utils.all_gather_object(capture_rng_state())
        if ctx.rank == 0:
            on_epoch(epoch + 1, dict(row), lambda: _train_state(model, opt, sched, rng, book, epoch + 1, loop, ctx))
            restore_rng_state(rng[0])  # whatever the callback drew, training continues as if it had not run
        dist_utils.barrier()
    best = book["best_epoch"]
    return {"history": book["history"], "best_epoch": best, "best_val_metric": book["best_metric"] if best else None,
            "final_metrics": book["history"][-1] if book["history"] else {}}


def _train_epoch(net, train_set, opt, sched, ctx, loop: Loop, epoch: int):
    """One pass over this process's share; returns (mean batch loss over all processes, last lr used)."""
    import torch

    device = torch.device(ctx.device)
    loader = make_train_loader(train_set, batch_size=loop.batch_size, seed=loop.seed, epoch=epoch,
                               workers=loop.workers, rank=ctx.rank, world_size=ctx.world_size,
                               pin_memory=device.type == "cuda")
    net.train()
    total, steps, last_lr = torch.zeros((), dtype=torch.float64, device=device), 0, opt.param_groups[0]["lr"]
    with ProgressBar(len(loader), f"epoch {epoch + 1}/{loop.epochs}", enabled=loop.show_progress) as bar:
        for images, masks in loader:
            images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
            loss = segmentation_loss(net(images), masks, loop.ignore_index)
            if ctx.world_size == 1 and not bool(torch.isfinite(loss)):  # under torchrun: the epoch check below
                raise RunFailedError(f"training loss became {float(loss)} at epoch {epoch + 1}, step {steps + 1}; "
                                     "lower segmentation.training.learning_rate or check the masks")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last_lr = opt.param_groups[0]["lr"]
            sched.step()
            total += loss.detach()  # no per-step device sync
            steps += 1
            bar.update(1, **({"loss": float(total) / steps} if bar.enabled else {}))
    total, steps = dist_utils.all_reduce_sum([float(total), steps], device)
    return total / max(steps, 1), last_lr


def _check_finite(row: Dict[str, float], epoch: int) -> None:
    # Per-class IoU is NaN for a class absent from the validation set (see metrics.py): that is not a failure.
    bad = sorted(k for k, v in row.items() if "IoU_" not in k and not math.isfinite(v))
    if bad:
        raise RunFailedError(f"{', '.join(bad)} became {row[bad[0]]} at epoch {epoch}; lower "
                             "segmentation.training.learning_rate, or check that validation masks hold labelled pixels")


def evaluate_model(model, loader, metrics, ignore_index: int, prefix: str = "val/") -> Dict[str, float]:
    """Loss (mean over labelled pixels) and metrics of `model` over `loader`, summed over all processes."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    model.eval()
    metrics.reset()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    pixels = torch.zeros((), dtype=torch.float64, device=device)
    with torch.no_grad():
        for images, masks in loader:
            images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
            logits = model(images)
            loss_sum += F.cross_entropy(logits, masks, ignore_index=ignore_index, reduction="sum")
            pixels += (masks != ignore_index).sum()
            metrics.update(logits, masks)
    loss_sum, pixels = dist_utils.all_reduce_sum([float(loss_sum), float(pixels)], device)
    return {f"{prefix}loss": loss_sum / pixels if pixels else math.nan, **metrics.compute(prefix)}


def evaluate_segmentation(*, model, items, num_classes: int, ignore_index: int, batch_size: int, device: str,
                          workers: int = 0, class_names: Optional[Sequence[str]] = None,
                          prefix: str = "val/") -> Dict[str, float]:
    """Evaluate `model` on (image, mask) pairs at full resolution; works under torchrun too."""
    import torch

    rank, world = (dist_utils.get_rank(), dist_utils.get_world_size()) if dist_utils.is_initialized() else (0, 1)
    model.to(torch.device(device))
    loader = make_eval_loader(items, batch_size=batch_size, workers=workers, ignore_index=ignore_index,
                              rank=rank, world_size=world)
    metrics = SegmentationMetrics(num_classes, ignore_index, class_names, device)
    with deterministic_mode(torch.device(device).type):
        return evaluate_model(model, loader, metrics, ignore_index, prefix)


def _train_state(model, opt, sched, rng, book, epochs_done, loop: Loop, ctx) -> dict:
    """What resuming needs, as weights_only-loadable plain values (tensors on CPU, no NumPy, no classes)."""
    return {
        "format": TRAIN_STATE_FORMAT,
        "epoch": epochs_done,
        "model_state": to_fp32_cpu(model.state_dict()),
        "optimizer": cpu_copy(opt.state_dict()),
        "scheduler": cpu_copy(sched.state_dict()),
        "rng": cpu_copy(rng),  # one entry per process, in rank order
        "data_position": {"epoch": epochs_done, "batch": 0, "seed": loop.seed, "world_size": ctx.world_size},
        "history": [dict(row) for row in book["history"]],
        "best_epoch": book["best_epoch"],
        "best_metric": book["best_metric"],
    }


def _restore(state, model, opt, sched, book, seed, ctx) -> None:
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise UserError(f"resume state is not a {TRAIN_STATE_FORMAT} dict; resume from a segmentation checkpoint")
    position = state["data_position"]
    if position["seed"] != seed:
        raise UserError(f"resume state was trained with seed {position['seed']} but seed {seed} was given; "
                        "resume with the original seed")
    if position["batch"] != 0:
        raise UserError("resume state is from the middle of an epoch; only epoch boundaries can be resumed")
    if position["world_size"] != ctx.world_size and ctx.rank == 0:
        warn(f"warning: resuming a {position['world_size']}-process run with {ctx.world_size} process(es): "
             "the data split differs, so the result will not be bit-identical to an uninterrupted run")
    model.load_state_dict(state["model_state"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    restore_rng_state(state["rng"][ctx.rank % len(state["rng"])])
    book["start"], book["history"] = int(state["epoch"]), [dict(row) for row in state["history"]]
    book["best_epoch"], book["best_metric"] = state["best_epoch"], state["best_metric"]
