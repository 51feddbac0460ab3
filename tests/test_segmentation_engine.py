"""Tests for src/tasks/segmentation: models, seeded augmentation, metrics, the deterministic loop, resume, DDP."""

import io
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import REPO_ROOT, subprocess_env
from src.common.atomic import atomic_write_with
from src.common.errors import UserError
from src.tasks.segmentation.dataset import SegmentationDataset, make_train_loader, read_mask
from src.common.checkpoint import state_dict_sha256
from src.tasks.segmentation.engine import TrainSettings, evaluate_segmentation, train_segmentation
from src.tasks.segmentation.metrics import SegmentationMetrics
from src.tasks.segmentation.models import build_model
from src.tasks.segmentation.progress import ProgressBar
from src.common.checkpoint import to_fp32_cpu
from src.tasks.segmentation.transforms import TrainAugment, sample_generator

NAMES = ["road", "sky", "car", "sign"]
IGNORE = 255
LRASPP = "lraspp_mobilenet_v3_large"
DEEPLAB = "deeplabv3_mobilenet_v3_large"  # has dropout: exercises the RNG state in resume


def write_dataset(root: Path, count: int = 6, size=(72, 88), seed: int = 0):
    """Tiny street scenes: sky over road, a car box, a sign square, an ignored strip; every class in every image."""
    rng = np.random.RandomState(seed)
    colors = np.array([[90, 90, 90], [120, 170, 230], [200, 30, 30], [240, 220, 20]], dtype=np.int16)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    h, w = size
    for i in range(count):
        mask = np.zeros((h, w), np.uint8)
        mask[: h // 2 + rng.randint(-6, 6)] = 1
        top, left = rng.randint(h // 2, h - 16), rng.randint(0, w - 24)
        mask[top:top + 14, left:left + 22] = 2
        top, left = rng.randint(2, h // 3), rng.randint(0, w - 8)
        mask[top:top + 7, left:left + 7] = 3
        mask[:, -3:] = IGNORE
        image = colors[np.minimum(mask, 3)] + rng.randint(-20, 20, size=(h, w, 3))
        image = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
        atomic_write_with(root / "images" / f"s{i}.png", lambda f, im=image: im.save(f, format="PNG"))
        atomic_write_with(root / "masks" / f"s{i}.png", lambda f, m=mask: Image.fromarray(m).save(f, format="PNG"))
    return [(root / "images" / f"s{i}.png", root / "masks" / f"s{i}.png") for i in range(count)]


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("seg_data"))


def train(items, *, seed=0, epochs=1, arch=LRASPP, init_seed=0, on_epoch=None, resume_state=None, workers=0):
    torch.manual_seed(init_seed)
    model = build_model(arch, num_classes=4, weights=None)
    result = train_segmentation(
        model=model, train_items=items[:4], val_items=items[4:], num_classes=4, ignore_index=IGNORE,
        settings=TrainSettings(epochs=epochs, batch_size=2, lr=0.02, weight_decay=1e-4, optimizer="sgd",
                               scheduler="poly", crop_size=64, workers=workers),
        seed=seed, device="cpu", on_epoch=on_epoch or (lambda *a: None),
        resume_state=resume_state, progress=False, class_names=NAMES)
    return model, result


# ---- models -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", [LRASPP, DEEPLAB])
def test_build_model_returns_logits_tensor(arch):
    model = build_model(arch, num_classes=5, weights=None).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 64, 80))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5, 64, 80)


def test_local_weights_load_ours_and_torchvision_style(tmp_path):
    torch.manual_seed(0)
    source = build_model(LRASPP, num_classes=4, weights=None)
    torch.save({"model_state": to_fp32_cpu(source.state_dict())}, tmp_path / "ckpt.pth")
    torch.manual_seed(1)
    loaded = build_model(LRASPP, num_classes=4, weights=tmp_path / "ckpt.pth")
    assert state_dict_sha256(loaded.state_dict()) == state_dict_sha256(source.state_dict())

    # torchvision-style file: bare net keys, another class count -> backbone loaded, classifier left fresh.
    torch.save(build_model(LRASPP, num_classes=21, weights=None).net.state_dict(), tmp_path / "tv.pth")
    other = torch.load(tmp_path / "tv.pth", weights_only=True)
    model = build_model(LRASPP, num_classes=4, weights=tmp_path / "tv.pth")
    assert torch.equal(model.net.backbone["0"][0].weight, other["backbone.0.0.weight"])
    assert model.net.classifier.low_classifier.weight.shape[0] == 4


def test_build_model_rejects_bad_input(tmp_path):
    with pytest.raises(UserError, match="unknown segmentation architecture"):
        build_model("unet", num_classes=4, weights=None)
    with pytest.raises(UserError, match="not found"):
        build_model(LRASPP, num_classes=4, weights=tmp_path / "missing.pth")


# ---- data and augmentation ----------------------------------------------------------------------------------

def test_augmentation_is_a_function_of_seed_epoch_index(items):
    augment = TrainAugment((64, 64), IGNORE, scale_range=(0.5, 0.5))  # 36x44 after scaling: must be padded
    dataset = SegmentationDataset(items, augment, seed=7)
    image, mask = dataset[(1, 2)]
    again_image, again_mask = dataset[(1, 2)]
    assert torch.equal(image, again_image) and torch.equal(mask, again_mask)
    assert image.shape == (3, 64, 64) and mask.shape == (64, 64) and mask.dtype == torch.long
    assert (mask == IGNORE).sum() >= 64 * 64 - 36 * 44  # padding carries the ignore index
    assert set(mask.unique().tolist()) <= {0, 1, 2, 3, IGNORE}
    other_epoch = torch.rand(4, generator=sample_generator(7, 2, 2))
    assert not torch.equal(torch.rand(4, generator=sample_generator(7, 1, 2)), other_epoch)


def test_loader_batches_identical_with_0_and_2_workers(items):
    dataset = SegmentationDataset(items, TrainAugment((64, 64), IGNORE), seed=5)

    def batches(workers, epoch):
        loader = make_train_loader(dataset, batch_size=2, seed=5, epoch=epoch, workers=workers)
        return list(loader)

    serial, parallel = batches(0, 1), batches(2, 1)
    assert len(serial) == 3
    for (img0, msk0), (img2, msk2) in zip(serial, parallel, strict=True):
        assert torch.equal(img0, img2) and torch.equal(msk0, msk2)
    assert not torch.equal(serial[0][0], batches(0, 2)[0][0])  # a new epoch reshuffles and re-augments


def test_dataset_rejects_rgb_mask_and_size_mismatch(tmp_path, items):
    atomic_write_with(tmp_path / "rgb.png", lambda f: Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(f, "PNG"))
    with pytest.raises(UserError, match="single-channel"):
        read_mask(tmp_path / "rgb.png")
    atomic_write_with(tmp_path / "small.png", lambda f: Image.fromarray(np.zeros((10, 10), np.uint8)).save(f, "PNG"))
    dataset = SegmentationDataset([(items[0][0], tmp_path / "small.png")], TrainAugment((64, 64), IGNORE))
    with pytest.raises(UserError, match="same height and width"):
        dataset[0]


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_draws_on_a_terminal_only():
    terminal, pipe = FakeTerminal(), io.StringIO()
    for stream in (terminal, pipe):
        with ProgressBar(3, "epoch 1/2", stream=stream, min_interval=0.0) as bar:
            for _ in range(3):
                bar.update(1, loss=0.5)
    assert "epoch 1/2" in terminal.getvalue() and "3/3" in terminal.getvalue() and "loss=0.5" in terminal.getvalue()
    assert pipe.getvalue() == ""


# ---- metrics ------------------------------------------------------------------------------------------------

def test_miou_matches_hand_computed_confusion_matrix():
    target = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, IGNORE]]])
    preds = torch.tensor([[[0, 1, 1, 1], [0, 2, 0, 0]]])
    # Rows = target class, columns = predicted class, over the 7 labelled pixels (class 3 occurs nowhere).
    confusion = np.array([[2, 1, 0, 0],
                          [0, 2, 0, 0],
                          [1, 0, 1, 0],
                          [0, 0, 0, 0]])
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    expected_iou = [tp[c] / union[c] for c in range(3)]  # 2/4, 2/3, 1/2
    metrics = SegmentationMetrics(4, IGNORE, NAMES)
    metrics.update(preds[:, :1], target[:, :1])  # two updates: states must accumulate
    metrics.update(preds[:, 1:], target[:, 1:])
    out = metrics.compute("val/")
    assert [out[f"val/IoU_{n}"] for n in NAMES[:3]] == pytest.approx(expected_iou)
    assert math.isnan(out["val/IoU_sign"])  # absent from prediction and target: no IoU, not 0
    assert out["val/mIoU"] == pytest.approx(sum(expected_iou) / 3)  # ... and left out of the mean
    assert out["val/pixel_accuracy"] == pytest.approx(tp.sum() / confusion.sum())


# ---- training loop ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_same_seed_same_weights_different_seed_different(items):
    calls = []
    model_a, result_a = train(items, seed=0, on_epoch=lambda e, m, get_state: calls.append((e, m)))
    model_b, _ = train(items, seed=0)
    model_c, _ = train(items, seed=1)
    sha_a = state_dict_sha256(model_a.state_dict())
    assert sha_a == state_dict_sha256(model_b.state_dict())
    assert sha_a != state_dict_sha256(model_c.state_dict())
    assert not torch.are_deterministic_algorithms_enabled()  # scoped to the call
    assert [e for e, _ in calls] == [1]
    expected = {"train/loss", "val/loss", "val/mIoU", "val/pixel_accuracy", "lr"} | {f"val/IoU_{n}" for n in NAMES}
    assert set(calls[0][1]) == expected
    assert result_a["best_epoch"] == 1 and result_a["best_val_metric"] == calls[0][1]["val/mIoU"]
    assert "best_model_state" not in result_a  # the caller keeps the best weights (from on_epoch)
    again = evaluate_segmentation(model=model_a, items=items[4:], num_classes=4, ignore_index=IGNORE,
                                  batch_size=2, device="cpu", class_names=NAMES)
    assert again["val/mIoU"] == calls[0][1]["val/mIoU"]  # evaluating the trained model reproduces the metric


class Interrupted(Exception):
    pass


@pytest.mark.slow
def test_resume_from_saved_state_is_bit_exact(items):
    saved = {}

    def save_and_crash(epoch, metrics, get_train_state):
        buffer = io.BytesIO()
        torch.save(get_train_state(), buffer)
        saved["state"] = buffer.getvalue()
        raise Interrupted

    with pytest.raises(Interrupted):
        train(items, arch=DEEPLAB, epochs=2, on_epoch=save_and_crash)
    assert not torch.are_deterministic_algorithms_enabled()

    full_model, full = train(items, arch=DEEPLAB, epochs=2)

    def load_state():
        random.seed(123), np.random.seed(123), torch.manual_seed(123)  # the new process's RNGs are elsewhere
        return torch.load(io.BytesIO(saved["state"]), weights_only=True)

    resumed_epochs = []
    resumed_model, resumed = train(items, arch=DEEPLAB, epochs=2, init_seed=99, resume_state=load_state(),
                                   on_epoch=lambda e, m, g: resumed_epochs.append(e))
    assert resumed_epochs == [2]
    assert state_dict_sha256(resumed_model.state_dict()) == state_dict_sha256(full_model.state_dict())
    assert resumed["history"] == full["history"]

    with pytest.raises(UserError, match="seed 0 but seed 1"):
        train(items, arch=DEEPLAB, epochs=2, seed=1, resume_state=load_state())

    # Control: the carried RNG state matters (dropout), so a resume that dropped it would not be bit-exact.
    tampered = load_state()
    tampered["rng"][0]["torch"] = torch.manual_seed(5).get_state()
    tampered_model, _ = train(items, arch=DEEPLAB, epochs=2, resume_state=tampered)
    assert state_dict_sha256(tampered_model.state_dict()) != state_dict_sha256(full_model.state_dict())


def test_train_rejects_batch_larger_than_data(items):
    torch.manual_seed(0)
    with pytest.raises(UserError, match="fewer than batch_size"):
        train_segmentation(model=build_model(LRASPP, 4, None), train_items=items[:1], val_items=items[1:2],
                           num_classes=4, ignore_index=IGNORE,
                           settings=TrainSettings(epochs=1, batch_size=2, lr=0.01, crop_size=64),
                           seed=0, device="cpu", on_epoch=lambda *a: None, progress=False)


@pytest.mark.slow
def test_torchrun_two_cpu_processes(items, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
            str(REPO_ROOT / "tests" / "segmentation_ddp_script.py"), str(items[0][0].parents[1]), str(out)]
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=subprocess_env({"OMP_NUM_THREADS": "1"}),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    calls = sorted(p.name for p in out.glob("on_epoch_*.json"))
    assert len(calls) == 1 and calls[0].startswith("on_epoch_rank0_epoch1_"), calls
    record = json.loads((out / calls[0]).read_text())
    assert record["rng_entries"] == 2 and 0.0 <= record["metrics"]["val/mIoU"] <= 1.0
    finals = [json.loads((out / f"final_rank{r}.json").read_text()) for r in (0, 1)]
    assert finals[0]["world_size"] == 2
    assert finals[0]["sha256"] == finals[1]["sha256"]  # gradients averaged: both processes hold the same model
