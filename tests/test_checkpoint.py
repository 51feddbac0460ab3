"""src/common/checkpoint.py: the shared weights-only checkpoint format."""

import pickle
import random
import re

import pytest
import torch

from src.common.checkpoint import (
    FORMAT_VERSION, REQUIRED_KEYS, build_checkpoint, file_sha256, load_checkpoint, save_checkpoint,
    state_dict_sha256, to_fp32_cpu,
)
from src.common.errors import UserError


class Custom:
    """A class torch's weights-only unpickler refuses (loading it would need our code)."""

    def __init__(self):
        self.value = 3


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                               torch.nn.Linear(4, 2))


def _ckpt(model=None, **extra):
    model = model or _model()
    return build_checkpoint(
        task="detection", subtask="vehicle_detection", model_state=model.state_dict(),
        model_spec={"architecture": "yolov8n.yaml", "names": ["car", "truck"]}, epoch=2,
        metrics={"val/mAP50": 0.5, "best_val_metric": 0.5}, config={"seed": 42, "lr": 1e-3},
        config_hash="abcd1234", metadata={"run_id": "20240101_000000_x", "nested": {"a": [1, 2]}}, **extra,
    )


def test_round_trip_loads_with_weights_only(tmp_path):
    rng = torch.get_rng_state()
    ckpt = _ckpt(train_state={"optimizer": {"lr": 0.1}, "rng": rng, "epoch": 2})
    path = save_checkpoint(tmp_path / "c.pth", ckpt)
    raw = torch.load(path, map_location="cpu", weights_only=True)  # the contract: no code runs
    loaded = load_checkpoint(path)
    for obj in (raw, loaded):
        assert set(REQUIRED_KEYS) <= set(obj)
        assert obj["format_version"] == FORMAT_VERSION and obj["epoch"] == 2
        assert obj["config"] == {"seed": 42, "lr": 1e-3} and obj["config_hash"] == "abcd1234"
        assert obj["model_spec"]["names"] == ["car", "truck"]
        assert obj["metadata"]["nested"] == {"a": [1, 2]}
        assert torch.equal(obj["train_state"]["rng"], rng) and obj["train_state"]["optimizer"] == {"lr": 0.1}
    assert state_dict_sha256(loaded["model_state"]) == state_dict_sha256(_model().state_dict())
    model = _model()
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    model.load_state_dict(loaded["model_state"])
    assert state_dict_sha256(model.state_dict()) == state_dict_sha256(_model().state_dict())


def test_train_state_is_optional(tmp_path):
    path = save_checkpoint(tmp_path / "c.pth", _ckpt())
    assert "train_state" not in load_checkpoint(path)


def test_overwrite_leaves_no_temp_files(tmp_path):
    path = tmp_path / "c.pth"
    save_checkpoint(path, _ckpt())
    ckpt = _ckpt()
    ckpt["epoch"] = 3
    save_checkpoint(path, ckpt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pth"]
    assert load_checkpoint(path)["epoch"] == 3


def test_save_refuses_objects_weights_only_rejects(tmp_path):
    ckpt = _ckpt()
    ckpt["metadata"]["bad"] = Custom()
    with pytest.raises(TypeError, match="weights_only"):
        save_checkpoint(tmp_path / "c.pth", ckpt)
    assert not (tmp_path / "c.pth").exists()
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_numpy_arrays(tmp_path):
    import numpy as np

    ckpt = _ckpt()
    ckpt["metrics"]["curve"] = np.zeros(3)
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "c.pth", ckpt)
    assert not (tmp_path / "c.pth").exists()


def test_fp32_cpu_conversion():
    state = {
        "half": torch.ones(2, dtype=torch.float16),
        "bf16": torch.ones(2, dtype=torch.bfloat16),
        "double": torch.tensor([1.5], dtype=torch.float64),
        "count": torch.tensor(7, dtype=torch.int64),
        "mask": torch.tensor([True, False]),
        "grad": torch.ones(2, requires_grad=True),
    }
    out = to_fp32_cpu(state)
    assert out["half"].dtype == out["bf16"].dtype == out["double"].dtype == torch.float32
    assert out["count"].dtype == torch.int64 and out["count"].item() == 7
    assert out["mask"].dtype == torch.bool
    assert not out["grad"].requires_grad
    assert all(t.device.type == "cpu" for t in out.values())
    out["count"].add_(1)
    assert state["count"].item() == 7  # a copy, not a view of the live model


def test_build_checkpoint_stores_fp32_weights():
    model = _model().half()
    ckpt = _ckpt(model)
    assert all(t.dtype == torch.float32 for t in ckpt["model_state"].values() if t.is_floating_point())
    assert ckpt["model_state"]["1.num_batches_tracked"].dtype == torch.int64


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pth")


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        load_checkpoint(tmp_path)


def _single_line(err):
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 400
    return msg


@pytest.mark.parametrize("allow_legacy", [False, True])
def test_truncated_file(tmp_path, allow_legacy):
    path = save_checkpoint(tmp_path / "c.pth", _ckpt())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as err:
        load_checkpoint(path, allow_legacy=allow_legacy)
    assert "corrupt, truncated or not a torch file" in _single_line(err)


@pytest.mark.parametrize("content", [random.Random(0).randbytes(2048), b"", b"not a checkpoint at all\n",
                                     b"PK\x03\x04" + random.Random(1).randbytes(500)])
def test_random_bytes(tmp_path, content):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    assert f"cannot read checkpoint {path}" in _single_line(err)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_file_is_not_a_torch_file(tmp_path):
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    assert "not a torch file" in _single_line(err)


def test_pickled_custom_class_needs_allow_legacy(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"model": _model().state_dict(), "extra": Custom()}, path)
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    msg = _single_line(err)
    assert "needs unpickling of Python code" in msg and "--allow-legacy-checkpoint" in msg


def test_allow_legacy_loads_with_a_warning(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"model": _model().state_dict(), "extra": Custom()}, path)
    with pytest.warns(UserWarning, match="loading legacy checkpoint .*unpickles code"):
        ckpt = load_checkpoint(path, allow_legacy=True)
    assert ckpt["legacy"] is True and ckpt["format_version"] == 0 and ckpt["path"] == str(path)
    assert isinstance(ckpt["legacy_object"]["extra"], Custom)


def test_allow_legacy_with_unimportable_class_is_a_user_error(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"extra": Custom()}, path)
    data = path.read_bytes()
    # Point the pickle at a module that does not exist, as a foreign checkpoint would.
    name = Custom.__module__.encode()
    assert name in data
    path.write_bytes(data.replace(name, b"x" * len(name)))
    with pytest.warns(UserWarning):
        with pytest.raises(UserError) as err:
            load_checkpoint(path, allow_legacy=True)
    assert "cannot load legacy checkpoint" in _single_line(err)


def test_foreign_plain_dict(tmp_path):
    path = tmp_path / "foreign.pth"
    torch.save({"model": _model().state_dict()}, path)
    with pytest.raises(UserError, match="not a street-scene checkpoint .*--allow-legacy-checkpoint"):
        load_checkpoint(path)
    ckpt = load_checkpoint(path, allow_legacy=True)
    assert ckpt["legacy"] is True and "model" in ckpt["legacy_object"]


def test_bare_tensor_file(tmp_path):
    path = tmp_path / "t.pth"
    torch.save(torch.ones(2), path)
    with pytest.raises(UserError, match="not a street-scene checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("key", ["model_state", "config_hash", "metadata", "epoch"])
def test_missing_keys(tmp_path, key):
    ckpt = _ckpt()
    del ckpt[key]
    path = tmp_path / "c.pth"
    torch.save(ckpt, path)
    with pytest.raises(UserError, match=f"incomplete: missing {key}"):
        load_checkpoint(path)


def test_several_missing_keys_are_all_named(tmp_path):
    path = tmp_path / "c.pth"
    torch.save({"format_version": FORMAT_VERSION, "task": "detection"}, path)
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    for key in set(REQUIRED_KEYS) - {"format_version", "task"}:
        assert key in str(err.value)


def test_other_format_version(tmp_path):
    ckpt = _ckpt()
    ckpt["format_version"] = FORMAT_VERSION + 1
    path = tmp_path / "c.pth"
    torch.save(ckpt, path)
    with pytest.raises(UserError, match=f"format version {FORMAT_VERSION + 1}"):
        load_checkpoint(path)


def test_state_dict_sha256_equal_iff_weights_equal():
    a, b = _model().state_dict(), _model().state_dict()
    assert state_dict_sha256(a) == state_dict_sha256(b)
    assert re.fullmatch(r"[0-9a-f]{64}", state_dict_sha256(a))
    assert state_dict_sha256(dict(reversed(list(a.items())))) == state_dict_sha256(a)  # key order irrelevant
    changed = {k: v.clone() for k, v in a.items()}
    changed["0.weight"][0, 0, 0, 0] += 1e-6
    assert state_dict_sha256(changed) != state_dict_sha256(a)


def test_state_dict_sha256_sees_dtype_shape_and_names():
    base = {"w": torch.zeros(4)}
    assert state_dict_sha256(base) != state_dict_sha256({"w": torch.zeros(4, dtype=torch.float64)})
    assert state_dict_sha256(base) != state_dict_sha256({"w": torch.zeros(2, 2)})
    assert state_dict_sha256(base) != state_dict_sha256({"v": torch.zeros(4)})
    assert state_dict_sha256({"e": torch.zeros(0)}) != state_dict_sha256({"e": torch.zeros(0, 1)})


def test_state_dict_sha256_handles_views_scalars_and_bools():
    big = torch.arange(10.0)
    assert state_dict_sha256({"w": big[2:5]}) == state_dict_sha256({"w": torch.tensor([2.0, 3.0, 4.0])})
    t = torch.arange(6.0).reshape(2, 3)
    assert state_dict_sha256({"w": t.t()}) == state_dict_sha256({"w": t.t().contiguous()})
    assert state_dict_sha256({"n": torch.tensor(3)}) != state_dict_sha256({"n": torch.tensor(4)})
    assert state_dict_sha256({"m": torch.tensor([True])}) != state_dict_sha256({"m": torch.tensor([False])})
    assert state_dict_sha256({"h": torch.ones(2, dtype=torch.bfloat16)})


def test_state_dict_sha256_survives_save_and_load(tmp_path):
    ckpt = _ckpt()
    path = save_checkpoint(tmp_path / "c.pth", ckpt)
    assert state_dict_sha256(load_checkpoint(path)["model_state"]) == state_dict_sha256(ckpt["model_state"])


def test_file_sha256(tmp_path):
    import hashlib

    path = tmp_path / "f.bin"
    path.write_bytes(b"street-scene")
    assert file_sha256(path) == hashlib.sha256(b"street-scene").hexdigest()
