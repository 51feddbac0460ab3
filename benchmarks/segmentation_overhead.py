"""Throughput of our segmentation loop vs a minimal hand-written torchvision loop (target: ratio <= 1.05).

Both train the same model (same init) on the same synthetic PNGs with the same batch size, crop, optimizer and
schedule, and run the same validation pass each epoch; the baseline is torchvision's reference recipe
(transforms.v2 RandomResize/RandomCrop/RandomHorizontalFlip, shuffled DataLoader, no determinism settings).
Runs alternate (A B, B A, ...) so drift on a shared machine hits both. Prints images/s and the ratio
ours_time / baseline_time (median over trials).

    python benchmarks/segmentation_overhead.py [--device cpu] [--trials 3] [--images 32] [--batch 8]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_images(root: Path, count: int, size: int, classes: int):
    import numpy as np
    from PIL import Image

    from src.common.atomic import atomic_write_with

    rng = np.random.RandomState(0)
    items = []
    for i in range(count):
        mask = rng.randint(0, classes, size=(size // 16, size // 16)).repeat(16, 0).repeat(16, 1).astype(np.uint8)
        image = (mask[..., None] * (255 // classes) + rng.randint(0, 40, size=(size, size, 3))).astype(np.uint8)
        paths = (root / f"img{i}.png", root / f"mask{i}.png")
        atomic_write_with(paths[0], lambda f, a=image: Image.fromarray(a).save(f, format="PNG"))
        atomic_write_with(paths[1], lambda f, a=mask: Image.fromarray(a).save(f, format="PNG"))
        items.append(paths)
    return items


def run_ours(args, items, val_items, model):
    from src.tasks.segmentation.engine import TrainSettings, train_segmentation

    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch, lr=0.01, weight_decay=1e-4, optimizer="sgd",
                             scheduler="poly", crop_size=args.crop, workers=args.workers)
    train_segmentation(model=model, train_items=items, val_items=val_items, num_classes=args.classes,
                       ignore_index=255, settings=settings, seed=0, device=args.device, on_epoch=lambda *a: None,
                       progress=False)


def run_baseline(args, items, val_items, model):
    """What one would write by hand from torchvision's segmentation reference scripts."""
    import torch
    from PIL import Image
    from torchmetrics.classification import MulticlassJaccardIndex
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    norm = [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    fill = {tv_tensors.Image: 0, tv_tensors.Mask: 255}
    train_tf = v2.Compose([v2.RandomResize(args.size // 2, args.size * 2), v2.RandomHorizontalFlip(),
                           v2.RandomCrop(args.crop, pad_if_needed=True, fill=fill), *norm])
    val_tf = v2.Compose([v2.ToDtype(torch.float32, scale=True), norm[1]])

    class Pairs(torch.utils.data.Dataset):
        def __init__(self, pairs, tf):
            self.pairs, self.tf = pairs, tf

        def __len__(self):
            return len(self.pairs)

        def __getitem__(self, i):
            image = tv_tensors.Image(v2.functional.pil_to_tensor(Image.open(self.pairs[i][0]).convert("RGB")))
            mask = tv_tensors.Mask(v2.functional.pil_to_tensor(Image.open(self.pairs[i][1]))[0].long())
            return self.tf(image, mask)

    device = torch.device(args.device)
    model.to(device)
    train_loader = torch.utils.data.DataLoader(Pairs(items, train_tf), batch_size=args.batch, shuffle=True,
                                               num_workers=args.workers, drop_last=True)
    val_loader = torch.utils.data.DataLoader(Pairs(val_items, val_tf), batch_size=args.batch,
                                             num_workers=args.workers)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=args.epochs * len(train_loader), power=0.9)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
    miou = MulticlassJaccardIndex(args.classes, ignore_index=255).to(device)
    for _ in range(args.epochs):
        model.train()
        for images, masks in train_loader:
            loss = criterion(model(images.to(device)), masks.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        miou.reset()
        with torch.no_grad():
            for images, masks in val_loader:
                logits = model(images.to(device))
                criterion(logits, masks.to(device))
                miou.update(logits.argmax(1), masks.to(device))
        miou.compute()
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="lraspp_mobilenet_v3_large")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--val-images", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from src.tasks.segmentation.models import build_model

    runners = {"ours": run_ours, "baseline": run_baseline}
    times = {name: [] for name in runners}
    with tempfile.TemporaryDirectory() as tmp:
        pairs = write_images(Path(tmp), args.images + args.val_images, args.size, args.classes)
        items, val_items = pairs[: args.images], pairs[args.images:]
        run_ours(argparse.Namespace(**{**vars(args), "epochs": 1}), items, val_items,  # warm-up (lazy inits)
                 build_model(args.arch, args.classes, None))
        for trial in range(args.trials):
            for name in (("ours", "baseline") if trial % 2 == 0 else ("baseline", "ours")):
                torch.manual_seed(0)
                model = build_model(args.arch, args.classes, None)
                start = time.perf_counter()
                runners[name](args, items, val_items, model)
                times[name].append(time.perf_counter() - start)
                print(f"trial {trial + 1} {name:8s} {args.epochs * args.images / times[name][-1]:8.2f} images/s")
    ours, base = statistics.median(times["ours"]), statistics.median(times["baseline"])
    print(f"device={args.device} arch={args.arch} batch={args.batch} crop={args.crop} images={args.images} "
          f"epochs={args.epochs} workers={args.workers} threads={torch.get_num_threads()}")
    print(f"ours     {args.epochs * args.images / ours:8.2f} images/s (median of {args.trials})")
    print(f"baseline {args.epochs * args.images / base:8.2f} images/s (median of {args.trials})")
    print(f"ratio ours_time/baseline_time = {ours / base:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
