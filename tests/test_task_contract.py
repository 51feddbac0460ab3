"""The task contract (src/tasks/contract.py): every registered task provides it, and a third task family needs
nothing outside its own module, its schema, a line in src.tasks.TASKS and a config file."""

import inspect
import json

import pytest

from src.tasks import TASKS, Family, load_task
from src.tasks.contract import Task


@pytest.mark.parametrize("family", sorted(TASKS))
def test_every_registered_task_provides_the_contract(family):
    module = load_task(family)
    assert isinstance(module, Task), [m for m in dir(Task) if not m.startswith("_") and not hasattr(module, m)]
    for name, member in inspect.getmembers(Task, inspect.isfunction):
        if name.startswith("_"):
            continue
        wanted = [p for p in inspect.signature(member).parameters if p != "self"]
        assert list(inspect.signature(getattr(module, name)).parameters) == wanted, f"{family}.{name}"
    assert module.BEST_METRIC.startswith("val/")
    assert isinstance(module.RESUME_SAFE_KEYS, tuple) and isinstance(module.SUPPORTS_RESUME, bool)


def test_the_contract_check_notices_a_missing_member():
    import types

    partial = types.ModuleType("partial_task")
    partial.BEST_METRIC = "val/x"
    assert not isinstance(partial, Task)


@pytest.fixture
def toy_family(monkeypatch, tmp_path):
    import src.tasks as tasks

    monkeypatch.setitem(tasks.TASKS, "toy", Family("tests.toy_task.task", "tests.toy_task.schema:ToySection"))
    tasks.config_schema.cache_clear()
    yield
    tasks.config_schema.cache_clear()


def _points(folder, slope, offset, n=8):
    folder.mkdir(parents=True)
    (folder / "points.csv").write_text("\n".join(f"{x / n},{slope * x / n + offset}" for x in range(n)) + "\n")
    return folder


def test_a_third_task_trains_registers_and_evaluates_through_the_cli(toy_family, tmp_path, monkeypatch, capsys):
    from src.cli.main import main
    from src.common.checkpoint import load_checkpoint
    from src.common.model_registry import ModelRegistry

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STREET_SCENE_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("STREET_SCENE_REGISTRY", str(tmp_path / "registry" / "model_registry.json"))
    config = tmp_path / "toy_config.yaml"
    config.write_text("seed: 3\ntoy:\n  training:\n    epochs: 3\n  tasks:\n    line_fit:\n      classes: [value]\n")
    train, val, test = (_points(tmp_path / name, 0.5, 1.0) for name in ("train", "val", "test"))
    assert load_task("toy").__name__ == "tests.toy_task.task"

    assert main(["train", "--config", str(config), "--task", "toy", "--toy-task", "line_fit", "--train-data",
                 str(train), "--val-data", str(val), "--run-name", "toy"]) == 0
    out = capsys.readouterr().out
    run_id = out.strip().splitlines()[-1].removeprefix("Run ID: ")
    entry = ModelRegistry().get_entry(run_id)
    assert entry["task"] == "line_fit" and entry["metrics"]["best_epoch"] == 3  # the loss falls every epoch
    assert entry["metrics"]["best_val_metric"] == entry["metrics"]["val/score"] < 0
    ckpt = load_checkpoint(tmp_path / "outputs" / run_id / "best_model.pth")
    assert (ckpt["task"], ckpt["subtask"], ckpt["model_spec"]) == ("toy", "line_fit", {"kind": "line"})

    assert main(["evaluate", "--config", str(config), "--task", "toy", "--toy-task", "line_fit", "--checkpoint",
                 str(tmp_path / "outputs" / run_id / "best_model.pth"), "--test-data", str(test),
                 "--verify-config", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert (result["task"], result["subtask"], result["run_id"]) == ("toy", "line_fit", run_id)
    assert result["metrics"]["test/score"] == pytest.approx(entry["metrics"]["val/score"])  # same points
    assert f"Config hash verified: {entry['config_hash']}" in err

    # and its config is validated against the toy schema like any other family's
    assert main(["train", "--config", str(config), "--task", "toy", "--toy-task", "line_fit", "--train-data",
                 str(train), "--val-data", str(val), "--config-override", "toy.training.epochs=0"]) == 2
    assert "toy.training.epochs" in capsys.readouterr().err


def test_a_segmentation_checkpoint_says_how_its_input_was_normalised():
    import torch

    from src.common.errors import UserError
    from src.tasks.segmentation.task import _model_spec, check_model_spec
    from src.tasks.segmentation.transforms import normalize

    config = {"segmentation": {"model": {"architecture": "lraspp_mobilenet_v3_large"}}}
    spec = check_model_spec(_model_spec(config, ["road", "car"], 255), "checkpoint")
    pre = spec["preprocessing"]
    image = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)
    mean, std = torch.tensor(pre["mean"]).view(3, 1, 1), torch.tensor(pre["std"]).view(3, 1, 1)
    by_hand = (image.float() * pre["scale"] - mean) / std
    assert torch.allclose(by_hand, normalize(image.clone()), atol=1e-6)  # the record is what training applied
    older = {k: v for k, v in spec.items() if k != "preprocessing"}
    assert check_model_spec(older, "checkpoint") == older  # checkpoints from before the record still load
    for bad in ({**pre, "std": [0.2, 0.0, 0.2]}, {**pre, "mean": [0.5]}, "imagenet", {**pre, "scale": float("nan")}):
        with pytest.raises(UserError, match="model_spec is not a segmentation model description"):
            check_model_spec({**spec, "preprocessing": bad}, "checkpoint")
