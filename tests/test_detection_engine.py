"""src/tasks/detection: offline set-up, training, evaluation and weights of the ultralytics engine.

One 2-epoch training on 8 tiny images (imgsz 64, CPU) is shared by the module; a subprocess repeats it to check
bit-exact weights across processes. Sockets are blocked by conftest; we also record every lookup attempt.
"""

import json
import os
import random
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from src.common.errors import UserError
from tests.helpers import subprocess_env

NAMES = ["car", "person"]
COLOURS = [(220, 40, 40), (40, 80, 220)]
ARGS = dict(epochs=2, batch=4, imgsz=64, lr0=0.01, workers=0, optimizer="SGD", plots=False)
TRAIN = dict(architecture="yolov8n.yaml", seed=0, device="cpu", weights=None, train_args=ARGS)


def train_args(**change):
    return {**ARGS, **change}


def make_tiny_dataset(root: Path, n_train: int = 8, n_val: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Coloured rectangles on grey, YOLO layout (images/<split>, labels/<split>); returns the data yaml."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    for split, count in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            image = Image.new("RGB", (size, size), (rng.randint(90, 140),) * 3)
            draw, lines = ImageDraw.Draw(image), []
            for _ in range(rng.randint(1, 3)):
                cls, w, h = rng.randrange(len(NAMES)), rng.randint(12, 28), rng.randint(12, 28)
                x0, y0 = rng.randint(0, size - w), rng.randint(0, size - h)
                draw.rectangle([x0, y0, x0 + w - 1, y0 + h - 1], fill=COLOURS[cls])
                lines.append(f"{cls} {(x0 + w / 2) / size:.6f} {(y0 + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
            image.save(root / "images" / split / f"{i:03d}.png")
            (root / "labels" / split / f"{i:03d}.txt").write_text("\n".join(lines) + "\n")
    data_yaml = root / "data.yaml"
    data_yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: {NAMES}\n")
    return data_yaml




@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained(offline, data_yaml, tmp_path_factory):
    """One training run, with the records on_epoch saw, the network attempts made and the cwd it ran in."""
    from src.tasks.detection.engine import train_yolo
    from src.common.checkpoint import state_dict_sha256

    cwd, project = tmp_path_factory.mktemp("cwd"), tmp_path_factory.mktemp("project")
    seen, hosts, states = [], [], {}
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def on_epoch(record):
        state = states[record.epoch] = record.model_state()  # what a caller keeps (the task: checkpoints)
        dtypes = {str(v.dtype) for v in state.values() if v.is_floating_point()}
        seen.append((record.epoch, dict(record.metrics), state_dict_sha256(state), dtypes,
                     {v.device.type for v in state.values()}))

    def getaddrinfo(host, *args, **kwargs):
        hosts.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock, address, *args):
        hosts.append(address[0] if isinstance(address, tuple) else address)
        return real_connect(sock, address, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        mp.setattr(socket.socket, "connect", connect)
        result = train_yolo(**{**TRAIN, "train_args": train_args(plots=True)},  # plots need the local font
                            data_yaml=data_yaml, project_dir=project, name="ul", on_epoch=on_epoch)
    return dict(result=result, seen=seen, hosts=hosts, cwd=cwd, project=project,
                best_state=states[result.best_epoch])


@pytest.mark.slow
def test_configure_ultralytics_fresh_process(tmp_path):
    """In a new process: config dir honoured, fonts placed, trackers off, no thread side effects, idempotent."""
    code = textwrap.dedent("""
        import json, os, sys
        from pathlib import Path
        from src.tasks.detection.offline import configure_ultralytics
        configure_ultralytics(Path(sys.argv[1]))
        settings = Path(sys.argv[1]) / "Ultralytics" / "settings.json"
        mtime = settings.stat().st_mtime_ns
        configure_ultralytics(Path(sys.argv[1]))
        import torch
        from ultralytics.utils import USER_CONFIG_DIR, ONLINE
        print(json.dumps(dict(user_dir=str(USER_CONFIG_DIR), online=ONLINE, omp=os.environ.get("OMP_NUM_THREADS"),
                              threads=torch.get_num_threads(), rewritten=settings.stat().st_mtime_ns != mtime,
                              settings=json.loads(settings.read_text()))))
    """)
    env = subprocess_env({"ULTRALYTICS_API_KEY": "ul_" + "0" * 40})
    env.pop("OMP_NUM_THREADS", None)
    env.pop("YOLO_OFFLINE", None)  # configure_ultralytics must set it itself
    plain = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
                           capture_output=True, text=True, timeout=120, check=True)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cfg")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    user_dir = tmp_path / "cfg" / "Ultralytics"
    assert out["user_dir"] == str(user_dir) and out["online"] is False
    # import ultralytics would have set OMP_NUM_THREADS=1 and pinned torch to one thread
    assert out["omp"] is None and out["threads"] == int(plain.stdout) and not out["rewritten"]
    settings = out["settings"]
    assert settings["sync"] is False and settings["api_key"] == ""
    assert not any(settings[k] for k in ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb"))
    assert settings["runs_dir"] == str(user_dir / "runs")
    import matplotlib

    dejavu = (Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf").read_bytes()
    assert (user_dir / "Arial.ttf").read_bytes() == dejavu == (user_dir / "Arial.Unicode.ttf").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg"]  # nothing else written in the cwd


def test_state_dict_sha256_tracks_names_dtypes_shapes_and_values():
    import torch

    from src.common.checkpoint import state_dict_sha256

    a = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": torch.tensor(3)}
    base = state_dict_sha256(a)
    assert state_dict_sha256({"n": a["n"].clone(), "w": a["w"].clone()}) == base  # order and storage don't matter
    assert state_dict_sha256({**a, "w": a["w"].reshape(3, 2)}) != base
    assert state_dict_sha256({**a, "w": a["w"].double()}) != base
    assert state_dict_sha256({"v": a["w"], "n": a["n"]}) != base
    changed = a["w"].clone()
    changed[1, 2] = torch.nextafter(changed[1, 2], torch.tensor(100.0))
    assert state_dict_sha256({**a, "w": changed}) != base
    assert len(state_dict_sha256({"b": torch.ones(2, dtype=torch.bfloat16)})) == 64


def test_plain_data_refuses_objects():
    from src.tasks.detection.weights import plain_data

    assert plain_data({"a": (1, [2.0, "x", None, True])}) == {"a": [1, [2.0, "x", None, True]]}
    with pytest.raises(TypeError, match=r"model_yaml\.a\[1\]"):
        plain_data({"a": [1, Path("x")]})


@pytest.mark.parametrize("change, message", [
    (dict(train_args=train_args(lr=0.1)), r"ultralytics 8\.4\.\d+ has no training argument 'lr'"),
    (dict(train_args=train_args(pretrained="yolo11n.pt")), "set by street-scene itself"),
    (dict(train_args=train_args(time=1.0)), "set by street-scene itself"),
    (dict(architecture="yolo11n.pt"), "must be an ultralytics model yaml"),
    (dict(architecture="no_such_model.yaml"), "not found"),
    (dict(architecture="yolo11n-seg.yaml"), "builds a segment model"),
    (dict(train_args=train_args(momentum="high")), "'momentum=high' is of invalid type str"),
    (dict(train_args=train_args(epochs=0)), "epochs=0"),
    (dict(train_args=train_args(imgsz=80)), "not a multiple of this model's stride 32"),
    (dict(weights=Path("missing.pth")), "not found"),
])
def test_train_yolo_rejects_bad_arguments(offline, data_yaml, tmp_path, monkeypatch, change, message):
    from src.tasks.detection.engine import train_yolo

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=message):
        train_yolo(**{**TRAIN, **change}, data_yaml=data_yaml, project_dir=tmp_path, name="x", on_epoch=print)
    assert list(tmp_path.iterdir()) == []  # refused before ultralytics wrote anything


def test_data_yaml_with_download_key_is_refused(offline, data_yaml, tmp_path):
    from src.tasks.detection.engine import train_yolo

    bad = tmp_path / "bad.yaml"
    bad.write_text(data_yaml.read_text() + "download: import os; os.system('echo pwned')\n")
    with pytest.raises(UserError, match="'download:' key"):
        train_yolo(**TRAIN, data_yaml=bad, project_dir=tmp_path, name="x", on_epoch=print)


def test_missing_images_become_a_user_error(offline, data_yaml, tmp_path, monkeypatch):
    from src.tasks.detection.engine import train_yolo

    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(data_yaml.read_text().replace("val: images/val", "val: images/nowhere"))
    with pytest.raises(UserError, match=r"^Dataset '.*bad.yaml' error .*images not found"):
        train_yolo(**TRAIN, data_yaml=bad, project_dir=tmp_path / "p", name="x", on_epoch=print)


@pytest.mark.slow
def test_failing_on_epoch_stops_training_and_leaves_no_global_state(offline, data_yaml, tmp_path, monkeypatch):
    import torch

    from src.tasks.detection.engine import train_yolo

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()

    def on_epoch(record):
        raise OSError(f"disk full at epoch {record.epoch}")

    with pytest.raises(OSError, match="disk full at epoch 1"):
        train_yolo(**TRAIN, data_yaml=data_yaml, project_dir=tmp_path / "p", name="x", on_epoch=on_epoch)
    # ultralytics turned deterministic mode on for training and off again; we restored its thread change
    assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert torch.get_num_threads() == threads


@pytest.mark.slow
def test_early_stop_without_ultralytics_checkpoints_still_returns_the_run(offline, data_yaml, tmp_path, monkeypatch):
    from src.tasks.detection.engine import train_yolo

    monkeypatch.chdir(tmp_path)
    lasts = []
    # Stopping after epoch 1 of 2 ends the run before the planned final epoch; with save=False ultralytics never
    # wrote last.pt, and YOLO.train() complains about that after training.
    result = train_yolo(**TRAIN, data_yaml=data_yaml, stop_after_epoch=1, project_dir=tmp_path / "p", name="x",
                        on_epoch=lambda r: lasts.append(r.last))
    assert lasts == [True] and [r.epoch for r in result.epochs] == [1] and result.best_epoch == 1
    assert not (tmp_path / "p" / "x" / "weights" / "last.pt").exists()


@pytest.mark.slow
def test_training_is_offline_and_writes_only_inside_project(trained, data_yaml):
    import ultralytics

    assert [h for h in trained["hosts"] if h not in ("localhost", "127.0.0.1", "::1")] == []
    assert list(trained["cwd"].iterdir()) == []  # no runs/ or anything else in the cwd
    assert not (Path(ultralytics.__file__).parents[1] / "tests" / "tmp").exists()  # ultralytics' pytest runs dir
    assert [p.name for p in trained["project"].iterdir()] == ["ul"]
    save_dir = trained["result"].save_dir
    assert save_dir == trained["project"] / "ul"
    assert {"args.yaml", "results.csv", "results.png", "weights"} <= {p.name for p in save_dir.iterdir()}
    assert list(data_yaml.parent.rglob("*.cache")) == []  # ultralytics' label caches live under our cache dir


@pytest.mark.slow
def test_on_epoch_sees_each_epoch_once_with_fp32_cpu_state(trained):
    result, seen = trained["result"], trained["seen"]
    assert [s[0] for s in seen] == [1, 2] == [r.epoch for r in result.epochs]  # final_eval's extra call skipped
    for _, metrics, _, dtypes, devices in seen:
        assert {"train/box_loss", "val/mAP50", "val/mAP50-95", "val/precision", "val/recall", "val/box_loss",
                "lr/pg0", "fitness"} <= set(metrics)
        assert all(isinstance(v, float) for v in metrics.values())
        assert dtypes == {"torch.float32"} and devices == {"cpu"}
    assert [s[1] for s in seen] == [r.metrics for r in result.epochs]
    assert [r.last for r in result.epochs] == [False, True]
    assert all(r.model_spec == result.model_spec for r in result.epochs)
    with pytest.raises(RuntimeError, match="only available inside on_epoch"):
        result.epochs[0].model_state()


@pytest.mark.slow
def test_best_epoch_state_is_the_ema_ultralytics_saved_as_best(trained):
    import torch
    from ultralytics.nn.tasks import torch_safe_load

    from src.common.checkpoint import state_dict_sha256

    result, seen = trained["result"], trained["seen"]
    values = [r.metrics["val/mAP50-95"] for r in result.epochs]
    assert result.best_epoch == values.index(max(values)) + 1
    assert result.best_metrics == result.epochs[result.best_epoch - 1].metrics
    best_state = trained["best_state"]
    assert state_dict_sha256(best_state) == seen[result.best_epoch - 1][2]
    ckpt, _ = torch_safe_load(str(result.save_dir / "weights" / "best.pt"), safe_only=True)
    saved = ckpt["model"].state_dict()  # final_eval's strip_optimizer moved the fp16 EMA to "model"
    assert saved.keys() == best_state.keys()
    assert all(torch.equal(v.half() if v.is_floating_point() else v, saved[k]) for k, v in best_state.items())
    assert not hasattr(result, "model_state")  # no copy of the weights held for nobody


@pytest.mark.slow
def test_model_spec_is_plain_and_survives_weights_only_round_trip(trained, tmp_path):
    import torch

    from src.common.checkpoint import state_dict_sha256
    from src.tasks.detection.weights import build_model

    result = trained["result"]
    spec = result.model_spec
    assert spec["architecture"] == "yolov8n.yaml" and spec["names"] == NAMES and spec["imgsz"] == 64
    path = tmp_path / "best_model.pth"
    torch.save({"model_state": trained["best_state"], "model_spec": spec}, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["model_spec"] == spec
    yolo = build_model(loaded["model_spec"], loaded["model_state"])
    assert type(yolo.model).__name__ == "DetectionModel" and yolo.model.names == {0: "car", 1: "person"}
    assert state_dict_sha256(yolo.model.state_dict()) == state_dict_sha256(trained["best_state"])
    with torch.no_grad():
        out = yolo.model(torch.zeros(1, 3, 64, 64))
    assert out[0].shape[1] == 4 + len(NAMES)  # boxes + one score per class


@pytest.mark.slow
def test_load_pretrained_reads_ultralytics_pt_without_pickle_and_refuses_junk(trained, tmp_path):
    from src.tasks.detection.weights import load_pretrained

    module = load_pretrained(trained["result"].save_dir / "weights" / "best.pt")  # ultralytics' allow-list loader
    assert module.state_dict().keys() == trained["best_state"].keys()
    assert {str(v.dtype) for v in module.state_dict().values() if v.is_floating_point()} == {"torch.float32"}
    for name, data in (("junk.pth", b"not a checkpoint"), ("junk.pt", b"not a checkpoint"),
                       ("cut.pth", (trained["result"].save_dir / "weights" / "last.pt").read_bytes()[:5000])):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError, match=str(tmp_path / name)):
            load_pretrained(tmp_path / name)


@pytest.mark.slow
def test_evaluate_reproduces_best_epoch_validation(trained, data_yaml, tmp_path, monkeypatch):
    from src.tasks.detection.engine import evaluate_yolo

    monkeypatch.chdir(tmp_path)
    result = trained["result"]
    found = evaluate_yolo(model_spec=result.model_spec, model_state=trained["best_state"], data_yaml=data_yaml,
                          split="val", imgsz=64, batch=2 * ARGS["batch"],  # the trainer validates at 2x batch
                          device="cpu", project_dir=tmp_path / "eval", name="test", plots=False)
    assert set(found) == {"metrics", "per_class", "details"}
    assert set(found["metrics"]) == {"val/mAP50", "val/mAP50-95", "val/precision", "val/recall"}
    assert list(found["per_class"]) == NAMES  # both classes occur in the val labels
    assert set(found["per_class"]["car"]) == {"val/AP50-95", "val/AP50"}
    best = result.best_metrics
    for name in found["metrics"]:  # the same names as the training epochs' validation metrics
        assert found["metrics"][name] == pytest.approx(best[name], abs=2e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]
    assert [p.name for p in (tmp_path / "eval").iterdir()] == ["test"]


@pytest.mark.slow
def test_evaluate_refuses_other_classes_and_missing_split(trained, data_yaml, tmp_path):
    from src.tasks.detection.engine import evaluate_yolo

    result = trained["result"]
    other = tmp_path / "other.yaml"
    other.write_text(data_yaml.read_text().replace("names: ['car', 'person']", "names: ['bus', 'person']"))
    args = dict(model_spec=result.model_spec, model_state=trained["best_state"], imgsz=64, batch=4, device="cpu",
                project_dir=tmp_path, name="e")
    with pytest.raises(UserError, match="differ from the classes"):
        evaluate_yolo(**args, data_yaml=other, split="val")
    with pytest.raises(UserError, match="no 'test' split"):
        evaluate_yolo(**args, data_yaml=data_yaml, split="test")


@pytest.mark.slow
def test_same_seed_same_weights_in_another_process_and_other_seed_differs(trained, data_yaml, tmp_path):
    code = textwrap.dedent("""
        import json, sys
        from pathlib import Path
        from src.tasks.detection.offline import configure_ultralytics
        configure_ultralytics(Path(sys.argv[1]) / "cfg")
        from src.tasks.detection.engine import train_yolo
        from src.common.checkpoint import state_dict_sha256
        args = json.loads(sys.argv[3])
        for seed in (0, 1):
            shas = {}
            r = train_yolo(**{**args, "seed": seed}, data_yaml=Path(sys.argv[2]), project_dir=Path(sys.argv[1]),
                           name=f"s{seed}", on_epoch=lambda rec: shas.update({rec.epoch: state_dict_sha256(rec.model_state())}))
            print("SHA", seed, shas[r.best_epoch])
    """)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(data_yaml), json.dumps(TRAIN)], cwd=tmp_path,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shas = dict(line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("SHA "))
    from src.common.checkpoint import state_dict_sha256

    assert shas["0"] == state_dict_sha256(trained["best_state"])
    assert shas["1"] != shas["0"]


@pytest.mark.slow
def test_training_starts_from_local_pretrained_checkpoint(trained, data_yaml, tmp_path, monkeypatch):
    import torch

    from src.tasks.detection.engine import train_yolo

    monkeypatch.chdir(tmp_path)
    pretrained = trained["best_state"]
    path = tmp_path / "best_model.pth"
    torch.save({"model_state": pretrained, "model_spec": trained["result"].model_spec}, path)
    # lr0=0 and no warmup: conv weights cannot move, so they must still be the loaded ones (BN stats do move)
    states = {}
    train_yolo(**{**TRAIN, "seed": 5, "weights": path, "train_args": train_args(epochs=1, lr0=0.0, warmup_epochs=0)},
               data_yaml=data_yaml, project_dir=tmp_path / "p", name="ft",
               on_epoch=lambda r: states.update({r.epoch: r.model_state()}))
    convs = [k for k in pretrained if k.endswith("conv.weight")]
    assert len(convs) > 50
    assert all(torch.allclose(states[1][k], pretrained[k], rtol=1e-5, atol=1e-7) for k in convs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_model.pth", "p"]


def test_a_setting_ultralytics_did_not_apply_fails_the_run(tmp_path):
    """The checks train_yolo runs during and after training: what ultralytics trains with (trainer.args) and what
    it recorded (args.yaml) must be what we passed, e.g. not a batch an out-of-memory retry halved."""
    from types import SimpleNamespace

    from src.common.errors import RunFailedError
    from src.tasks.detection.engine import _check_effective_args, _check_recorded_args

    wanted = {"batch": 16, "lr0": 0.01, "mixup": 0.5, "freeze": [0, 1]}
    _check_effective_args(SimpleNamespace(batch=16, lr0=0.01, mixup=0.5, freeze=(0, 1)), wanted, "during training")
    with pytest.raises(RunFailedError, match=r"ultralytics changed batch from 16 to 8 during training"):
        _check_effective_args(SimpleNamespace(batch=8, lr0=0.01, mixup=0.5, freeze=[0, 1]), wanted, "during training")
    (tmp_path / "args.yaml").write_text("batch: 16\nlr0: 0.01\nmixup: 0.0\nfreeze: [0, 1]\n")
    with pytest.raises(RunFailedError, match=r"ultralytics recorded mixup=0.0 in .*args.yaml, but street-scene "
                                             r"passed 0.5"):
        _check_recorded_args(tmp_path / "args.yaml", wanted)
