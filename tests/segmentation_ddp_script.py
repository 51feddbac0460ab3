"""Launched by tests/test_segmentation_engine.py under `torch.distributed.run --nproc_per_node=2` (CPU, gloo).

usage: segmentation_ddp_script.py DATA_DIR OUT_DIR
Trains one epoch on DATA_DIR/{images,masks}; the on_epoch callback (rank 0 only, by contract) writes one file
named after the rank that called it; every rank writes the sha256 of its final weights so the test can check that
DDP kept the processes' models identical.
"""

import json
import os
import sys
from pathlib import Path


def main(data_dir: Path, out_dir: Path) -> None:
    import torch

    from src.common.atomic import atomic_write_text
    from src.common.checkpoint import state_dict_sha256
    from src.tasks.segmentation.engine import TrainSettings, train_segmentation
    from src.tasks.segmentation.models import build_model

    items = [(p, data_dir / "masks" / p.name) for p in sorted((data_dir / "images").glob("*.png"))]
    rank = os.environ["RANK"]
    torch.manual_seed(0)
    model = build_model("lraspp_mobilenet_v3_large", num_classes=4, weights=None)

    def on_epoch(epoch, metrics, get_train_state):
        state = get_train_state()
        record = {"rank": rank, "epoch": epoch, "metrics": metrics, "rng_entries": len(state["rng"])}
        atomic_write_text(out_dir / f"on_epoch_rank{rank}_epoch{epoch}_pid{os.getpid()}.json", json.dumps(record))

    result = train_segmentation(
        model=model, train_items=items, val_items=items[:3], num_classes=4, ignore_index=255,
        settings=TrainSettings(epochs=1, batch_size=2, lr=0.01, crop_size=64), seed=3, device="cpu",
        on_epoch=on_epoch, progress=False, class_names=["road", "sky", "car", "sign"])
    atomic_write_text(out_dir / f"final_rank{rank}.json", json.dumps(
        {"sha256": state_dict_sha256(model.state_dict()), "world_size": result["world_size"]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
