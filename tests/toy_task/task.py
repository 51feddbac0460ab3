"""Fit y = w x + b to the points in `<split>/points.csv`: the smallest model that goes through the whole run
lifecycle (checked data, epochs, checkpoints, registry, evaluation)."""

from pathlib import Path
from typing import Any, Dict, List

from src.common.errors import UserError
from src.tasks.config_sections import section
from src.tasks.contract import EvalOutcome, PreparedData, TrainOutcome

BEST_METRIC = "val/score"  # minus the mean squared error: higher is better
ACCEPTS_LEGACY_CHECKPOINTS = False
SUPPORTS_RESUME = False
RESUME_SAFE_KEYS: tuple = ()
SPEC = {"kind": "line"}


def _points(spec, role: str) -> List[List[float]]:
    path = Path(spec or "") / "points.csv"
    if not spec or not path.is_file():
        raise UserError(f"--{role}-data {spec}: no points.csv there")
    return [[float(v) for v in line.split(",")] for line in path.read_text().split()]


def prepare_train(config, subtask, train_data, val_data, data_yaml, device: str = "cpu") -> PreparedData:
    names = list(section(config, "toy", "tasks", subtask)["classes"])
    return PreparedData(names=names, record={"train": str(train_data), "val": str(val_data)},
                        splits={"train": _points(train_data, "train"), "val": _points(val_data, "val")})


def total_epochs(config: Dict[str, Any]) -> int:
    return int(section(config, "toy", "training")["epochs"])


def check_model_spec(spec: Any, where: str) -> Dict[str, Any]:
    if spec != SPEC:
        raise UserError(f"{where}: not a toy model")
    return spec


def before_legacy_load() -> None:
    """No legacy format (ACCEPTS_LEGACY_CHECKPOINTS is False)."""


def result_metrics(history: List[Dict[str, Any]], best_epoch: int) -> Dict[str, Any]:
    row = next(r for r in history if r["epoch"] == best_epoch)
    return {"best_val_metric": row[BEST_METRIC], "best_epoch": best_epoch, "epochs_completed": len(history),
            BEST_METRIC: row[BEST_METRIC]}


def _xy(points):
    import torch

    return torch.tensor([[p[0]] for p in points]), torch.tensor([[p[1]] for p in points])


def _score(model, points) -> float:
    import torch

    x, y = _xy(points)
    with torch.no_grad():
        return -float(torch.nn.functional.mse_loss(model(x), y))


def train(ctx) -> TrainOutcome:
    import torch

    cfg = section(ctx.config, "toy", "training")
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=cfg["learning_rate"])
    x, y = _xy(ctx.data.splits["train"])
    best_epoch, best = None, None
    for epoch in range(1, cfg["epochs"] + 1):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        metrics = {"train/loss": float(loss.detach()), BEST_METRIC: _score(model, ctx.data.splits["val"])}
        ctx.log_epoch(epoch, metrics)
        is_best = best is None or metrics[BEST_METRIC] > best
        if is_best:
            best_epoch, best = epoch, metrics[BEST_METRIC]
        ctx.save_checkpoint(epoch, model.state_dict(), SPEC, metrics, is_best=is_best, last=epoch == cfg["epochs"])
    return TrainOutcome(metrics=result_metrics(ctx.history, best_epoch))


def prepare_eval(config, subtask, test_data, data_yaml, ckpt) -> PreparedData:
    check_model_spec(ckpt["model_spec"], "checkpoint")
    names = list(section(config, "toy", "tasks", subtask)["classes"])
    return PreparedData(names=names, record={"test": str(test_data)}, splits={"test": _points(test_data, "test")})


def evaluate(ctx) -> EvalOutcome:
    import torch

    model = torch.nn.Linear(1, 1)
    model.load_state_dict(ctx.checkpoint["model_state"])
    return EvalOutcome(metrics={"test/score": _score(model, ctx.data.splits["test"])})
