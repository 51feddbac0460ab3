"""`predict`: run a trained model (checkpoint, run id or exported .onnx) over images, a folder, a list or a video."""

import argparse

from src.tasks import TASKS

HELP = "predict with a trained model (best_model.pth, run id or exported .onnx) on images or a video"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="outputs/<run>/best_model.pth, a run id, or an .onnx written by street-scene export")
    parser.add_argument("--source", required=True, metavar="PATH",
                        help="an image, a folder of images, a .txt list of images, or a video file")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: predictions/<time>_<run id>); "
                        "its parent must exist")
    parser.add_argument("--task", choices=tuple(TASKS), help="refuse a model of another task")
    parser.add_argument("--conf", type=float, help="detection: minimum confidence (default 0.25)")
    parser.add_argument("--iou", type=float, help="detection: NMS IoU threshold (default 0.7)")
    parser.add_argument("--imgsz", type=int, metavar="N", help="model input size (default: detection the trained "
                        "size, segmentation the image's own; a fixed-size export only takes its own)")
    parser.add_argument("--json", action="store_true", help="print the records as a JSON array on stdout, "
                        "nothing else there")
    parser.add_argument("--save-images", action="store_true", help="detection: also save images with boxes drawn")
    parser.add_argument("--force", action="store_true", help="replace an existing --out folder")


def run(args: argparse.Namespace) -> int:
    import contextlib
    import json
    import sys
    from pathlib import Path

    from src.inference.predict import PredictRequest, predict_source

    request = PredictRequest(checkpoint=args.checkpoint, source=args.source,
                             out=Path(args.out) if args.out else None, conf=args.conf, iou=args.iou,
                             imgsz=args.imgsz, save_images=args.save_images, force=args.force, task=args.task)
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):  # --json: stdout holds only JSON
        result = predict_source(request)
    records, out = result["records"], result["out_dir"]
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    predictor = result["predictor"]
    print(f"{predictor.task} ({predictor.subtask}) model {predictor.provenance.get('run_id') or '-'} "
          f"[{predictor.format}] on {len(records)} image(s)")
    for record in records:
        print("  " + _summary(record))
    print(f"Predictions saved to {out}")
    return 0


def _summary(record: dict) -> str:
    name = record["image"] + (f"#{record['frame']}" if "frame" in record else "")
    if "detections" in record:
        counts = {}
        for det in record["detections"]:
            counts[det["class_name"]] = counts.get(det["class_name"], 0) + 1
        found = ", ".join(f"{n} {c}" for c, n in counts.items()) or "nothing"
        return f"{name}: {found}"
    top = sorted(record["class_fractions"].items(), key=lambda kv: -kv[1])[:3]
    return f"{name}: " + ", ".join(f"{c} {f:.0%}" for c, f in top if f > 0)
