"""`street-scene predict` and `street-scene export` end to end, on one tiny detection run and one tiny
segmentation run trained in this process. The CLI runs in-process (`main([...])`); only what must be seen by
another program runs in a fresh process: ultralytics loading the exported `.pt` (YOLO(), `yolo predict`,
`yolo export`)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from detection_e2e_support import IMGSZ_64, NO_PLOTS, VEHICLE_CLASSES, VEHICLE_YAML, make_data, workspace_env
from helpers import REPO_ROOT, subprocess_env
from segmentation_e2e_support import DATA_YAML as SEG_YAML
from src.cli.main import main

pytestmark = pytest.mark.slow
CONF = "0.001"  # a one-epoch 64 px model is unsure of everything: keep its weak detections


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return SimpleNamespace(code=code, out=out, err=err)


def assert_refused(result, pattern: str) -> None:
    import re

    lines = [line for line in result.err.splitlines() if line.strip()]
    assert result.code == 2, (result.code, result.err)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def ws(tmp_path_factory, offline):
    root = tmp_path_factory.mktemp("predict_export")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in workspace_env(root).items():
            mp.setenv(key, value)
        mp.chdir(root)
        make_data(root / "det", 8, 4, 2)
        from src.data.synthetic import make_segmentation_dataset

        make_segmentation_dataset(root / "seg", 8, 4, 2, seed=0, image_size=(128, 64))
        yield root


def _train(args) -> str:
    code = main([str(a) for a in args])
    assert code == 0
    return sorted((Path(os.environ["STREET_SCENE_OUTPUT_DIR"])).iterdir())[-1].name


@pytest.fixture(scope="module")
def det_run(ws):
    overrides = [IMGSZ_64, *NO_PLOTS, "detection.training.epochs=1", "detection.training.batch_size=4", "device=cpu"]
    run_id = _train(["train", "--config", REPO_ROOT / "configs/detection_config.yaml", "--task", "detection",
                     "--detection-task", "vehicle_detection", "--train-data", ws / "det/train", "--val-data",
                     ws / "det/val", "--data-yaml", VEHICLE_YAML, "--run-name", "det",
                     *[a for o in overrides for a in ("--config-override", o)]])
    return ws / "outputs" / run_id


@pytest.fixture(scope="module")
def seg_run(ws, det_run):
    overrides = ["segmentation.training.epochs=1", "segmentation.training.batch_size=4",
                 "segmentation.training.crop_size=[64,64]", "device=cpu"]
    run_id = _train(["train", "--config", REPO_ROOT / "configs/segmentation_config.yaml", "--task", "segmentation",
                     "--segmentation-task", "road_scene_segmentation", "--train-data", ws / "seg/train",
                     "--val-data", ws / "seg/val", "--data-yaml", REPO_ROOT / SEG_YAML, "--run-name", "seg",
                     *[a for o in overrides for a in ("--config-override", o)]])
    return ws / "outputs" / run_id


def test_predict_detection_every_source_kind(ws, det_run, capsys):
    from src.common.checkpoint import file_sha256

    images = sorted((ws / "det/test/images").glob("*.jpg"))
    (ws / "list.txt").write_text("\n".join(os.path.relpath(p, ws) for p in images) + "\n")
    _write_video(ws / "clip.avi", images)
    results = {}
    for kind, source in {"image": images[0], "folder": ws / "det/test/images", "list": ws / "list.txt",
                         "video": ws / "clip.avi"}.items():
        r = cli(capsys, "predict", "--checkpoint", det_run.name, "--source", source, "--out", ws / f"det_{kind}",
                "--conf", CONF, "--json", "--save-images")
        assert r.code == 0, r.err
        results[kind] = json.loads(r.out)  # stdout is the JSON array and nothing else
        saved = json.loads((ws / f"det_{kind}" / "predictions.json").read_text())
        assert [x["detections"] for x in saved] == [x["detections"] for x in results[kind]]
        prov = json.loads((ws / f"det_{kind}" / "provenance.json").read_text())["model"]
        assert prov["run_id"] == det_run.name
        assert prov["checkpoint_sha256"] == file_sha256(det_run / "best_model.pth")
        assert len(prov["config_hash"]) == 8
    assert [len(results[k]) for k in ("image", "folder", "list", "video")] == [1, 2, 2, 2]
    assert results["folder"] == results["list"]
    record = results["folder"][0]
    assert set(record) == {"image", "width", "height", "detections", "rendered"}
    assert (record["width"], record["height"]) == (64, 64) and record["detections"]
    for det in record["detections"]:
        assert set(det) == {"class_id", "class_name", "confidence", "box_xyxy"}
        assert det["class_name"] == VEHICLE_CLASSES[det["class_id"]]
        x1, y1, x2, y2 = det["box_xyxy"]
        assert 0 <= x1 <= x2 <= 64 and 0 <= y1 <= y2 <= 64
    assert [r["frame"] for r in results["video"]] == [0, 1]
    assert (ws / "det_folder" / "images" / f"{images[0].stem}.jpg").is_file()


def _write_video(path: Path, images) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 64))
    for image in images:
        writer.write(cv2.imread(str(image)))
    writer.release()


def test_predict_matches_ultralytics_and_pipeline(ws, det_run):
    """Same weights through raw YOLO(...).predict give the same detections as our predictor."""
    from src.common.checkpoint import load_checkpoint
    from src.inference.sources import read_image
    from src.pipelines.pipeline import StreetScenePipeline
    from src.tasks.detection.weights import build_model

    images = sorted((ws / "det/test/images").glob("*.jpg"))
    ckpt = load_checkpoint(det_run / "best_model.pth")
    yolo = build_model(ckpt["model_spec"], ckpt["model_state"])
    raw = yolo.predict([str(p) for p in images], conf=float(CONF), imgsz=64, verbose=False, save=False,
                       project=str(ws / "raw"), name="p", exist_ok=True)
    pipeline = StreetScenePipeline(REPO_ROOT / "configs/detection_config.yaml", "detection")
    ours = pipeline.predict(ws / "det/test/images", det_run / "best_model.pth", out=ws / "pipe", conf=float(CONF))
    for r, o in zip(raw, ours):
        assert len(r.boxes) == len(o["detections"])
        np.testing.assert_allclose(r.boxes.xyxy.numpy(), [d["box_xyxy"] for d in o["detections"]], atol=1e-4)
        np.testing.assert_allclose(r.boxes.conf.numpy(), [d["confidence"] for d in o["detections"]], atol=1e-6)
    assert read_image(images[0]).shape == (64, 64, 3)


def test_export_onnx_metadata_parity_and_predict(ws, det_run, capsys):
    import onnx

    from src.common.checkpoint import file_sha256

    r = cli(capsys, "export", "--checkpoint", det_run.name, "--format", "onnx")
    assert r.code == 0, r.err
    assert "onnxruntime" in r.out and "max abs diff" in r.out
    path = det_run / "exports" / "best_model.onnx"
    model = onnx.load(str(path))
    assert model.opset_import[0].version >= 17
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["street_scene.run_id"]) == det_run.name
    assert json.loads(props["street_scene.checkpoint_sha256"]) == file_sha256(det_run / "best_model.pth")
    assert json.loads(props["street_scene.class_names"]) == VEHICLE_CLASSES
    assert json.loads(props["street_scene.task"]) == "detection"
    assert json.loads(props["street_scene.imgsz"]) == [64, 64]
    assert set(json.loads(props["street_scene.dataset_fingerprints"])) == {"train", "val"}
    for key in ("config_hash", "subtask", "preprocessing", "version"):
        assert json.loads(props[f"street_scene.{key}"])
    exports = json.loads((det_run / "exports.json").read_text())
    assert exports[-1]["path"] == str(path) and exports[-1]["sha256"] == file_sha256(path)
    assert set(exports[-1]["parity"]) == {"max_abs_diff", "max_rel_diff", "torch_p50_ms", "runtime_p50_ms", "images"}
    assert exports[-1]["parity"]["max_rel_diff"] <= 1e-3
    shown = json.loads(cli(capsys, "registry", "show", det_run.name, "--json").out)
    assert shown["exports"] == exports
    # predict on the .onnx gives the checkpoint's detections
    src = ws / "det/test/images"
    pth = json.loads(cli(capsys, "predict", "--checkpoint", det_run / "best_model.pth", "--source", src,
                         "--out", ws / "p_pth", "--conf", CONF, "--json").out)
    onx = json.loads(cli(capsys, "predict", "--checkpoint", path, "--source", src, "--out", ws / "p_onnx",
                         "--conf", CONF, "--json").out)
    assert [len(x["detections"]) for x in pth] == [len(x["detections"]) for x in onx]
    for a, b in zip(pth, onx):
        for da, db in zip(a["detections"], b["detections"]):
            assert da["class_id"] == db["class_id"]
            assert abs(da["confidence"] - db["confidence"]) < 1e-4
            np.testing.assert_allclose(da["box_xyxy"], db["box_xyxy"], atol=1e-2)
    onnx_prov = json.loads((ws / "p_onnx" / "provenance.json").read_text())["model"]
    assert onnx_prov["run_id"] == det_run.name and onnx_prov["onnx_sha256"] == file_sha256(path)
    # never overwrite without --force; nothing half-written
    before = path.read_bytes()
    assert_refused(cli(capsys, "export", "--checkpoint", det_run.name, "--format", "onnx"), "already exists.*--force")
    assert path.read_bytes() == before and not list(path.parent.glob(".*partial*"))


def test_export_torchscript_both_tasks(ws, det_run, seg_run, capsys):
    import torch

    for run in (det_run, seg_run):
        r = cli(capsys, "export", "--checkpoint", run / "best_model.pth", "--format", "torchscript")
        assert r.code == 0, r.err
        extra = {"street_scene.json": ""}
        module = torch.jit.load(str(run / "exports" / "best_model.torchscript"), _extra_files=extra)
        props = json.loads(extra["street_scene.json"])
        assert json.loads(props["street_scene.run_id"]) == run.name
        out = module(torch.zeros(1, 3, 64, 64))
        assert (out[0] if isinstance(out, tuple) else out).shape[0] == 1
    pre = json.loads(props["street_scene.preprocessing"])  # segmentation: the embedded normalisation
    assert pre["mean"] == [0.485, 0.456, 0.406] and pre["normalization_embedded"] is True


def test_segmentation_predict_and_onnx(ws, seg_run, capsys):
    from PIL import Image

    src = ws / "seg/test/images"
    r = cli(capsys, "predict", "--checkpoint", seg_run.name, "--source", src, "--out", ws / "seg_pred", "--json")
    assert r.code == 0, r.err
    records = json.loads(r.out)
    assert len(records) == 2
    for rec in records:
        mask = np.asarray(Image.open(ws / "seg_pred" / rec["mask"]))
        assert mask.shape == (64, 128) and mask.dtype == np.uint8 and mask.max() < 8
        assert (ws / "seg_pred" / rec["overlay"]).is_file()
        assert abs(sum(rec["class_fractions"].values()) - 1) < 1e-6
    r = cli(capsys, "export", "--checkpoint", seg_run.name, "--format", "onnx", "--dynamic")
    assert r.code == 0, r.err
    onnx_path = seg_run / "exports" / "best_model-dynamic.onnx"
    r2 = cli(capsys, "predict", "--checkpoint", onnx_path, "--source", src, "--out", ws / "seg_onnx", "--json")
    assert r2.code == 0, r2.err
    for a, b in zip(records, json.loads(r2.out)):
        ma = np.asarray(Image.open(ws / "seg_pred" / a["mask"]))
        mb = np.asarray(Image.open(ws / "seg_onnx" / b["mask"]))
        assert (ma == mb).mean() > 0.999


def test_ultralytics_pt_loads_in_ultralytics(ws, det_run, capsys):
    r = cli(capsys, "export", "--checkpoint", det_run.name, "--format", "ultralytics")
    assert r.code == 0, r.err
    pt = det_run / "exports" / "best_model.pt"
    image = sorted((ws / "det/test/images").glob("*.jpg"))[0]
    env = subprocess_env({"YOLO_CONFIG_DIR": str(ws / "yolo_cfg"), "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"})
    script = ("import json, sys; from ultralytics import YOLO\n"
              f"m = YOLO({str(pt)!r}); r = m.predict({str(image)!r}, conf=0.001, verbose=False, save=False)\n"
              "import torch; ck = torch.load(sys.argv[1], weights_only=False)\n"
              "print(json.dumps({'names': m.names, 'n': len(r[0].boxes), 'prov': ck['street_scene']['run_id']}))\n")
    proc = subprocess.run([sys.executable, "-c", script, str(pt)], capture_output=True, text=True, env=env,
                          cwd=ws, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(seen["names"].values()) == VEHICLE_CLASSES and seen["prov"] == det_run.name
    yolo = str(Path(sys.executable).parent / "yolo")
    for args in (["predict", f"model={pt}", f"source={image}", f"project={ws / 'yp'}", "name=p", "conf=0.001"],
                 ["export", f"model={pt}", "format=onnx", "imgsz=64"]):
        proc = subprocess.run([yolo, *args], capture_output=True, text=True, env=env, cwd=ws, timeout=300)
        assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-2000:])
    assert (det_run / "exports" / "best_model.onnx").is_file()


def test_bad_input_is_one_line(ws, det_run, seg_run, capsys):
    src = ws / "det/test/images"
    assert_refused(cli(capsys, "predict", "--checkpoint", seg_run.name, "--source", src, "--task", "detection",
                       "--out", ws / "x1"), "segmentation model.*detection model is required")
    assert_refused(cli(capsys, "export", "--checkpoint", seg_run.name, "--format", "ultralytics"),
                   "ultralytics format is for detection")
    assert_refused(cli(capsys, "predict", "--checkpoint", det_run.name, "--source", ws / "nope",
                       "--out", ws / "x2"), "source not found")
    (ws / "broken.jpg").write_bytes(b"not an image")
    assert_refused(cli(capsys, "predict", "--checkpoint", det_run.name, "--source", ws / "broken.jpg",
                       "--out", ws / "x3"), "cannot read image")
    (ws / "broken.mp4").write_bytes(b"not a video")
    assert_refused(cli(capsys, "predict", "--checkpoint", det_run.name, "--source", ws / "broken.mp4",
                       "--out", ws / "x4"), "cannot read video")
    (ws / "data.csv").write_text("a,b\n")
    assert_refused(cli(capsys, "predict", "--checkpoint", det_run.name, "--source", ws / "data.csv",
                       "--out", ws / "x5"), "unknown format")
    with pytest.raises(SystemExit) as exited:  # argparse refuses it: one `error:` line, exit 2
        main(["export", "--checkpoint", det_run.name, "--format", "tflite"])
    assert exited.value.code == 2
    assert_refused(SimpleNamespace(code=2, err=capsys.readouterr().err), "invalid choice.*tflite")
    (ws / "exists").mkdir()
    assert_refused(cli(capsys, "predict", "--checkpoint", det_run.name, "--source", src, "--out", ws / "exists"),
                   "already exists.*--force")
    assert not any((ws / f"x{i}").exists() for i in range(1, 6))
    assert not list(ws.glob(".*partial*")) and list((ws / "exists").iterdir()) == []
