"""`export`: a checkpoint as ONNX, TorchScript or an ultralytics .pt, checked against the checkpoint and recorded."""

import argparse

HELP = "export a checkpoint as ONNX, TorchScript or an ultralytics .pt, carrying its provenance"
FORMAT_CHOICES = ("onnx", "torchscript", "ultralytics")  # src.inference.export.FORMATS, without importing it


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="outputs/<run>/best_model.pth or a run id")
    parser.add_argument("--format", required=True, choices=FORMAT_CHOICES,
                        help="onnx (opset 17, onnxruntime), torchscript, or ultralytics (a .pt for YOLO(); detection)")
    parser.add_argument("--out", metavar="PATH", help="file to write (default: <run dir>/exports/"
                        "best_model[-dynamic].<onnx|torchscript|pt>)")
    parser.add_argument("--imgsz", type=int, metavar="N", help="input size (default: detection the trained size, "
                        "segmentation the training crop size)")
    parser.add_argument("--dynamic", action="store_true", help="any input size (and batch) instead of a fixed one")
    parser.add_argument("--force", action="store_true", help="replace an existing file")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from src.inference.export import ExportRequest, export_model

    entry = export_model(ExportRequest(checkpoint=args.checkpoint, format=args.format,
                                       out=Path(args.out) if args.out else None, imgsz=args.imgsz,
                                       dynamic=args.dynamic, force=args.force))
    print(f"Parity on {entry['parity']['images']} {entry['parity_images']}:")
    print(entry["table"])
    print(f"Exported {args.format} ({'dynamic' if entry['dynamic'] else 'x'.join(map(str, entry['imgsz']))}) "
          f"to {entry['path']}")
    print(f"sha256 {entry['sha256']}")
    if entry["recorded_in"]:
        print(f"Recorded in {entry['recorded_in']}/exports.json")
    return 0
