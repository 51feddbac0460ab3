"""src/pipelines/context.py (checkpoint policy, metrics.csv), plus curves, run_log and atomic writes it relies on."""

import csv
import logging
import math
import sys

import pytest
import torch

from src.common.atomic import atomic_write_bytes, atomic_write_text, atomic_write_with
from src.common.checkpoint import load_checkpoint
from src.common.curves import plot_curves
from src.common.run_log import tee_output
from src.common.run_dir import BEST_CHECKPOINT, METRICS_FILE, epoch_checkpoint_name, read_metrics_csv, write_metrics_csv
from src.common.report import shown
from src.pipelines.context import TrainContext
from src.tasks.contract import PreparedData

SPEC = {"architecture": "tiny", "in": 2}


def _ctx(tmp_path, **kw):
    return TrainContext(config={"seed": 1}, config_hash="0123abcd", task="segmentation", subtask="road",
                        seed=1, device="cpu", run_id="r", run_dir=tmp_path, data=PreparedData(names=[], record={}),
                        metadata={"run_id": "r"}, **kw)


def _state(value=0.0):
    return {"w": torch.full((2,), value), "steps": torch.tensor(3)}


def _ckpt_files(path):
    return sorted(p.name for p in path.glob("*.pth"))


def _run_epochs(ctx, epochs, best_at=()):
    for epoch in range(1, epochs + 1):
        ctx.save_checkpoint(epoch, _state(epoch), SPEC, {"loss": 1.0 / epoch}, is_best=epoch in best_at,
                            last=epoch == epochs, train_state={"optimizer": {"step": epoch}})
    ctx.finish_checkpoints()


def test_every_epoch_by_default(tmp_path):
    _run_epochs(_ctx(tmp_path), 3, best_at=(2,))
    assert _ckpt_files(tmp_path) == [BEST_CHECKPOINT] + [epoch_checkpoint_name(e) for e in (1, 2, 3)]


def test_save_every_keeps_multiples_and_the_last(tmp_path):
    _run_epochs(_ctx(tmp_path, save_every=2), 5)
    assert _ckpt_files(tmp_path) == [epoch_checkpoint_name(e) for e in (2, 4, 5)]


def test_save_every_zero_means_only_the_last(tmp_path):
    _run_epochs(_ctx(tmp_path, save_every=0), 4)
    assert _ckpt_files(tmp_path) == [epoch_checkpoint_name(4)]


def test_keep_last_prunes_oldest_by_epoch_number(tmp_path):
    _run_epochs(_ctx(tmp_path, keep_last=2), 12, best_at=(3,))
    # numeric order, not text order: epoch 9 is older than epoch 10
    assert _ckpt_files(tmp_path) == [BEST_CHECKPOINT, epoch_checkpoint_name(11), epoch_checkpoint_name(12)]


def test_keep_last_zero_keeps_all(tmp_path):
    _run_epochs(_ctx(tmp_path, keep_last=0), 4)
    assert len(_ckpt_files(tmp_path)) == 4


def test_best_model_has_no_train_state_but_epoch_checkpoint_does(tmp_path):
    ctx = _ctx(tmp_path)
    returned = ctx.save_checkpoint(1, _state(1.0), SPEC, {"loss": 0.5}, is_best=True,
                                   train_state={"optimizer": {"step": 1}})
    assert returned == tmp_path / epoch_checkpoint_name(1)
    ctx.finish_checkpoints()
    best = load_checkpoint(tmp_path / BEST_CHECKPOINT)
    epoch = load_checkpoint(tmp_path / epoch_checkpoint_name(1))
    assert "train_state" not in best
    assert epoch["train_state"] == {"optimizer": {"step": 1}}
    for ckpt in (best, epoch):
        assert ckpt["task"] == "segmentation" and ckpt["subtask"] == "road" and ckpt["epoch"] == 1
        assert ckpt["config_hash"] == "0123abcd" and ckpt["model_spec"] == SPEC
        assert ckpt["metrics"] == {"loss": 0.5} and ckpt["metadata"] == {"run_id": "r"}
        assert torch.equal(ckpt["model_state"]["w"], torch.full((2,), 1.0))


def test_without_train_state_best_model_is_a_copy_of_the_epoch_checkpoint(tmp_path):
    ctx = _ctx(tmp_path, keep_last=1)
    ctx.save_checkpoint(1, _state(1.0), SPEC, {"loss": 0.5}, is_best=True)
    ctx.save_checkpoint(2, _state(2.0), SPEC, {"loss": 0.7})
    ctx.finish_checkpoints()
    assert _ckpt_files(tmp_path) == [BEST_CHECKPOINT, epoch_checkpoint_name(2)]  # epoch 1 pruned, best kept
    best = load_checkpoint(tmp_path / BEST_CHECKPOINT)
    assert best["epoch"] == 1 and torch.equal(best["model_state"]["w"], torch.full((2,), 1.0))
    (tmp_path / "again").mkdir()
    ctx = _ctx(tmp_path / "again")
    ctx.save_checkpoint(3, _state(3.0), SPEC, {}, is_best=True)
    ctx.finish_checkpoints()
    again = tmp_path / "again"
    assert (again / BEST_CHECKPOINT).read_bytes() == (again / epoch_checkpoint_name(3)).read_bytes()


def test_best_only_epoch_returns_best_path(tmp_path):
    ctx = _ctx(tmp_path, save_every=5)
    assert ctx.save_checkpoint(1, _state(), SPEC, {}, is_best=True) == tmp_path / BEST_CHECKPOINT
    ctx.finish_checkpoints()
    assert _ckpt_files(tmp_path) == [BEST_CHECKPOINT]


def test_nothing_due_returns_none(tmp_path):
    assert _ctx(tmp_path, save_every=3).save_checkpoint(1, _state(), SPEC, {}) is None
    assert _ckpt_files(tmp_path) == []


def test_best_is_overwritten_by_a_better_epoch(tmp_path):
    _run_epochs(_ctx(tmp_path), 3, best_at=(1, 3))
    assert load_checkpoint(tmp_path / BEST_CHECKPOINT)["epoch"] == 3


def test_callable_model_state_is_only_built_when_saving(tmp_path):
    calls = []

    def state():
        calls.append(1)
        return _state(2.0)

    ctx = _ctx(tmp_path, save_every=2)
    assert ctx.save_checkpoint(1, state, SPEC, {}) is None
    assert calls == []
    ctx.save_checkpoint(2, state, SPEC, {}, is_best=True)
    assert calls == [1]
    ctx.finish_checkpoints()
    assert torch.equal(load_checkpoint(tmp_path / BEST_CHECKPOINT)["model_state"]["w"], torch.full((2,), 2.0))


def test_non_main_process_writes_nothing(tmp_path):
    ctx = _ctx(tmp_path, is_main=False)
    assert ctx.save_checkpoint(1, _state(), SPEC, {}, is_best=True, last=True) is None
    ctx.log_epoch(1, {"loss": 1.0})
    ctx.finish_checkpoints()
    assert list(tmp_path.iterdir()) == []
    assert ctx.history == [{"epoch": 1, "loss": 1.0}]


def _blocking_save(monkeypatch, release, started):
    """Make the checkpoint writer wait for `release` (an Event) before it writes."""
    from src.pipelines import context

    real = context.save_checkpoint

    def save(path, ckpt):
        started.set()
        assert release.wait(10), "test never released the writer"
        return real(path, ckpt)

    monkeypatch.setattr(context, "save_checkpoint", save)


def test_checkpoints_are_written_in_the_background(tmp_path, monkeypatch):
    import threading

    release, started = threading.Event(), threading.Event()
    _blocking_save(monkeypatch, release, started)
    ctx = _ctx(tmp_path)
    path = ctx.save_checkpoint(1, _state(1.0), SPEC, {}, is_best=True)  # returns while the write is held
    assert path == tmp_path / epoch_checkpoint_name(1)
    assert started.wait(10) and _ckpt_files(tmp_path) == []
    release.set()
    ctx.finish_checkpoints()
    assert _ckpt_files(tmp_path) == [BEST_CHECKPOINT, epoch_checkpoint_name(1)]


def test_background_write_sees_the_epoch_it_was_given(tmp_path, monkeypatch):
    """Tensors and dicts the loop changes in place after save_checkpoint returns (the optimizer's momentum
    buffers, the weights) must not leak into the file being written."""
    import threading

    release, started = threading.Event(), threading.Event()
    _blocking_save(monkeypatch, release, started)
    ctx = _ctx(tmp_path)
    weights, momentum = _state(1.0), torch.zeros(3)
    train_state = {"optimizer": {"state": {0: {"momentum_buffer": momentum}}, "step": 1}}
    ctx.save_checkpoint(1, weights, SPEC, {"loss": 0.5}, train_state=train_state)
    assert started.wait(10)
    weights["w"].add_(100.0)
    momentum.add_(7.0)
    train_state["optimizer"]["step"] = 2
    release.set()
    ctx.finish_checkpoints()
    saved = load_checkpoint(tmp_path / epoch_checkpoint_name(1))
    assert torch.equal(saved["model_state"]["w"], torch.full((2,), 1.0))
    assert torch.equal(saved["train_state"]["optimizer"]["state"][0]["momentum_buffer"], torch.zeros(3))
    assert saved["train_state"]["optimizer"]["step"] == 1


def test_a_failed_background_write_is_raised(tmp_path, monkeypatch):
    ctx = _ctx(tmp_path)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("src.common.atomic.os.replace", full)
    ctx.save_checkpoint(1, _state(), SPEC, {})
    with pytest.raises(OSError, match="No space left"):
        ctx.finish_checkpoints()
    assert list(tmp_path.iterdir()) == []  # atomic: no partial file, no temp file


def test_a_failed_write_is_raised_by_the_next_save(tmp_path, monkeypatch):
    ctx = _ctx(tmp_path)
    calls = []

    def fail_once(path, ckpt):
        calls.append(path.name)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("src.pipelines.context.save_checkpoint", fail_once)
    ctx.save_checkpoint(1, _state(), SPEC, {})
    with pytest.raises(OSError, match="Input/output error"):
        ctx.save_checkpoint(2, _state(), SPEC, {})
    assert calls == [epoch_checkpoint_name(1)]  # epoch 2 was not queued behind the failure


def test_finishing_a_failing_run_warns_about_a_write_error_instead_of_raising(tmp_path, monkeypatch, capsys):
    ctx = _ctx(tmp_path)

    def fail(path, ckpt):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("src.pipelines.context.save_checkpoint", fail)
    ctx.save_checkpoint(1, _state(), SPEC, {})
    with shown():  # as under the CLI
        ctx.finish_checkpoints(raise_errors=False)
    assert "a background write failed as well: OSError" in capsys.readouterr().err


def test_log_epoch_writes_union_of_columns(tmp_path):
    ctx = _ctx(tmp_path)
    ctx.log_epoch(1, {"train/loss": 0.9})
    ctx.log_epoch(2, {"train/loss": 0.7, "val/mIoU": 0.3})
    ctx.log_epoch(3, {"val/mIoU": 0.4, "lr": torch.tensor(0.01)})
    with open(tmp_path / METRICS_FILE, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["epoch", "train/loss", "val/mIoU", "lr"]
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["val/mIoU"] == "" and rows[2]["train/loss"] == ""
    assert float(rows[2]["lr"]) == pytest.approx(0.01)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_log_epoch_replaces_a_repeated_epoch_and_calls_hooks(tmp_path):
    seen = []
    ctx = _ctx(tmp_path, epoch_hooks=[lambda epoch, row: seen.append((epoch, row))])
    ctx.log_epoch(1, {"loss": 1.0})
    ctx.log_epoch(1, {"loss": 0.5})
    assert read_metrics_csv(tmp_path / METRICS_FILE) == [{"epoch": 1, "loss": 0.5}]
    assert seen == [(1, {"epoch": 1, "loss": 1.0}), (1, {"epoch": 1, "loss": 0.5})]


def test_log_epoch_is_atomic(tmp_path, monkeypatch):
    """A crash while writing leaves the previous metrics.csv intact."""
    ctx = _ctx(tmp_path)
    ctx.log_epoch(1, {"loss": 1.0})
    before = (tmp_path / METRICS_FILE).read_text()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("src.common.atomic.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        ctx.log_epoch(2, {"loss": 0.5})
    assert (tmp_path / METRICS_FILE).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [METRICS_FILE]


def test_metrics_csv_round_trip(tmp_path):
    rows = [{"epoch": 1, "loss": 0.5, "name": "warmup", "count": 3, "tiny": 1e-7},
            {"epoch": 2, "loss": float("nan"), "name": "main", "count": 4, "tiny": 2.5e-7, "extra": -1.25}]
    write_metrics_csv(tmp_path / "m.csv", rows)
    back = read_metrics_csv(tmp_path / "m.csv")
    assert back[0] == {"epoch": 1, "loss": 0.5, "name": "warmup", "count": 3, "tiny": 1e-7, "extra": None}  # empty cell
    assert math.isnan(back[1]["loss"])
    assert {k: v for k, v in back[1].items() if k != "loss"} == {"epoch": 2, "name": "main", "count": 4,
                                                                  "tiny": 2.5e-7, "extra": -1.25}
    assert type(back[0]["count"]) is int and type(back[0]["loss"]) is float


def test_read_metrics_csv_missing_file(tmp_path):
    assert read_metrics_csv(tmp_path / "nope.csv") == []


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_curves_writes_a_png(tmp_path):
    rows = [{"epoch": e, "loss": 1 / e, "val/mAP": 0.1 * e, "note": "x"} for e in range(1, 4)]
    out = plot_curves(rows, tmp_path / "curves.png")
    assert out == tmp_path / "curves.png" and _is_png(out)


def test_plot_curves_from_csv_with_gaps(tmp_path):
    ctx = _ctx(tmp_path)
    ctx.log_epoch(1, {"train/loss": 0.9})
    ctx.log_epoch(2, {"train/loss": 0.7, "val/mIoU": 0.3})
    rows = read_metrics_csv(tmp_path / METRICS_FILE)
    assert _is_png(plot_curves(rows, tmp_path / "c.png"))


@pytest.mark.parametrize("rows", [[], [{"epoch": 1}], [{"epoch": 1, "only": "text"}]])
def test_plot_curves_without_numeric_metrics(tmp_path, rows):
    assert _is_png(plot_curves(rows, tmp_path / "c.png"))


def test_plot_curves_does_not_change_the_matplotlib_backend(tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    plot_curves([{"epoch": 1, "a": 1.0}], tmp_path / "c.png")
    assert matplotlib.get_backend() == before


# ---------------------------------------------------------------- run_log


def test_tee_output_copies_prints_and_still_prints(tmp_path, capsys):
    log = tmp_path / "train.log"
    with tee_output(log):
        print("to stdout")
        print("to stderr", file=sys.stderr)
    captured = capsys.readouterr()
    assert captured.out == "to stdout\n" and captured.err == "to stderr\n"
    assert log.read_text() == "to stdout\nto stderr\n"


def test_tee_output_restores_streams_after_an_error(tmp_path):
    out, err = sys.stdout, sys.stderr
    with pytest.raises(RuntimeError):
        with tee_output(tmp_path / "train.log"):
            print("before crash")
            raise RuntimeError("boom")
    assert sys.stdout is out and sys.stderr is err
    assert "before crash" in (tmp_path / "train.log").read_text()


def test_tee_output_appends(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("earlier\n")
    with tee_output(log):
        print("later")
    assert log.read_text() == "earlier\nlater\n"


def test_tee_output_captures_a_library_logger_bound_to_the_real_stream(tmp_path, capsys):
    logger = logging.getLogger("street_scene_test_lib")
    handler = logging.StreamHandler(sys.stdout)  # bound before the tee, like ultralytics' handler
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with tee_output(tmp_path / "train.log", loggers=("street_scene_test_lib",)):
            logger.info("epoch 1 done")
        logger.info("after the run")
    finally:
        logger.removeHandler(handler)
    text = (tmp_path / "train.log").read_text()
    assert "epoch 1 done" in text and "after the run" not in text


def test_detached_tee_keeps_passing_writes_through(tmp_path, capsys):
    with tee_output(tmp_path / "train.log"):
        kept = sys.stdout  # e.g. a logging handler created during the run
    kept.write("late write\n")
    kept.flush()
    assert "late write" in capsys.readouterr().out
    assert "late write" not in (tmp_path / "train.log").read_text()


# ---------------------------------------------------------------- atomic


def test_atomic_writes(tmp_path):
    (tmp_path / "sub").mkdir()  # atomic writes never create folders
    atomic_write_text(tmp_path / "sub" / "a.txt", "héllo\n")
    assert (tmp_path / "sub" / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    atomic_write_with(tmp_path / "c.txt", lambda f: f.write("text mode"), "w")
    assert (tmp_path / "c.txt").read_text() == "text mode"


def test_atomic_write_failure_keeps_old_file_and_no_temp(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")

    def fail(f):
        f.write(b"partial")
        raise ValueError("writer failed")

    with pytest.raises(ValueError):
        atomic_write_with(path, fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
