"""Inference overhead: our predictor vs raw `YOLO(...).predict` on the same weights and images, and torch vs
onnxruntime CPU latency for both tasks.

    .venv/bin/python benchmarks/inference.py --det-checkpoint outputs/<det run>/best_model.pth \
        --det-images data/veh/test/images --seg-checkpoint outputs/<seg run>/best_model.pth \
        --seg-images data/seg/test/images [--repeats 3]

Prints per-image wall time for both, their ratio (target <= 1.05) and whether the detections are identical,
then a latency table (p50 ms per image) of torch vs onnxruntime. ONNX files are written to a temp folder.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _per_image_ms(fn, n_images: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000 / n_images)
    return statistics.median(times)


def detection_vs_ultralytics(checkpoint: Path, images: list, repeats: int, conf: float) -> None:
    import numpy as np

    from src.common.checkpoint import load_checkpoint
    from src.inference.predictor import load_predictor
    from src.inference.sources import read_image
    from src.tasks.detection.weights import build_model

    predictor = load_predictor(checkpoint, task="detection")
    ckpt = load_checkpoint(checkpoint)
    yolo = build_model(ckpt["model_spec"], ckpt["model_state"])
    imgsz = predictor.imgsz[0]
    out = tempfile.mkdtemp(prefix="bench-yolo-")
    paths = [str(p) for p in images]

    def raw():
        return [yolo.predict(p, conf=conf, imgsz=imgsz, verbose=False, save=False, project=out, name="p",
                             exist_ok=True)[0] for p in paths]

    def ours():  # reading included, as ultralytics reads the files too
        return [predictor.predict_one(read_image(Path(p)), p, conf=conf) for p in paths]

    raw_results, our_results = raw(), ours()  # warm-up, and the detections compared
    same = all(len(r.boxes) == len(o["detections"]) and np.allclose(
        r.boxes.xyxy.numpy(), np.array([d["box_xyxy"] for d in o["detections"]]).reshape(-1, 4), atol=1e-4)
        for r, o in zip(raw_results, our_results))
    t_raw, t_ours = 0.0, 0.0
    for _ in range(2):  # interleaved, so drift in machine load hits both
        t_raw += _per_image_ms(raw, len(paths), repeats)
        t_ours += _per_image_ms(ours, len(paths), repeats)
    n_dets = sum(len(o["detections"]) for o in our_results)
    print(f"detection predict on {len(paths)} images ({imgsz} px), conf {conf}, {n_dets} detections")
    print(f"  raw YOLO.predict  {t_raw / 2:8.2f} ms/image")
    print(f"  street-scene      {t_ours / 2:8.2f} ms/image")
    print(f"  ratio             {t_ours / t_raw:8.3f}  (target <= 1.05)   same detections: {same}")


def torch_vs_onnx(checkpoint: Path, images: list, task: str, repeats: int) -> str:
    from src.inference.export import ExportRequest, export_model
    from src.inference.predictor import load_predictor
    from src.inference.sources import read_image

    reader = "cv2" if task == "detection" else "pil"
    arrays = [read_image(Path(p), reader) for p in images]
    out = Path(tempfile.mkdtemp(prefix="bench-onnx-")) / "model.onnx"
    export_model(ExportRequest(checkpoint=str(checkpoint), format="onnx", out=out, dynamic=True))
    rows = []
    for name, ref in (("torch", checkpoint), ("onnxruntime", out)):
        predictor = load_predictor(ref, task=task)
        predictor.predict_arrays(arrays)  # warm-up
        rows.append((name, _per_image_ms(lambda: predictor.predict_arrays(arrays), len(arrays), repeats)))
    size = "x".join(map(str, arrays[0].shape[:2]))
    return "\n".join(f"  {task:<12} {size:>8}  {name:<12} {ms:8.2f}" for name, ms in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--det-checkpoint", required=True, type=Path)
    parser.add_argument("--det-images", required=True, type=Path)
    parser.add_argument("--seg-checkpoint", required=True, type=Path)
    parser.add_argument("--seg-images", required=True, type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--conf", type=float, default=0.001)
    args = parser.parse_args()
    from src.tasks.detection.offline import configure_ultralytics, default_config_dir

    configure_ultralytics(default_config_dir())
    det_images = sorted(p for p in args.det_images.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    seg_images = sorted(p for p in args.seg_images.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    detection_vs_ultralytics(args.det_checkpoint, det_images, args.repeats, args.conf)
    print("CPU latency, full predict per image (pre + model + post), p50 ms:")
    print(torch_vs_onnx(args.det_checkpoint, det_images, "detection", args.repeats))
    print(torch_vs_onnx(args.seg_checkpoint, seg_images, "segmentation", args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
