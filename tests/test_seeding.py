"""Seed precedence (config_manager.resolve_seed / ConfigManager) and src/common/seeding.py."""

import os
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from src.common.config_manager import ConfigManager, resolve_seed
from src.common.errors import UserError
from src.common.seeding import determinism_restored, determinism_settings, seed_everything, seed_rngs, seed_worker


@pytest.fixture
def restore_torch_determinism(monkeypatch):
    """seed_everything changes process-wide torch flags; put them back so other tests are unaffected."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2], flags[3]


# ---------------------------------------------------------------- precedence


@pytest.mark.parametrize("cli, env, config, expected", [
    (7, "123", 5, (7, "cli")),
    (0, "123", 5, (0, "cli")),
    (None, "123", 5, (123, "env")),
    (None, " 9 ", None, (9, "env")),
    (None, None, 5, (5, "config")),
    (None, "", 5, (5, "config")),
    (None, None, None, (42, "default")),
    (None, "", None, (42, "default")),
])
def test_resolve_seed_precedence(cli, env, config, expected):
    assert resolve_seed(cli, env, config) == expected


@pytest.mark.parametrize("cli, env, config, match", [
    (-1, None, None, "--seed: seed -1 is out of range"),
    (2**32, None, None, "out of range"),
    (None, "abc", None, "STREET_SCENE_SEED='abc' is not an integer"),
    (None, "1.5", None, "not an integer"),
    (None, "-3", None, "STREET_SCENE_SEED: seed -3 is out of range"),
    (None, None, "42", "config key 'seed' must be an integer"),
    (None, None, 4.0, "must be an integer"),
    (None, None, True, "must be an integer"),
    (None, None, -2, "config key 'seed': seed -2 is out of range"),
])
def test_resolve_seed_rejects_bad_seeds(cli, env, config, match):
    with pytest.raises(UserError, match=match):
        resolve_seed(cli, env, config)


def test_bad_env_seed_does_not_matter_when_cli_seed_given():
    assert resolve_seed(3, "garbage", None) == (3, "cli")


_TASKS = "detection:\n  tasks:\n    cars: {classes: [car]}\n"


def _config(tmp_path, text="seed: 5\n"):
    path = tmp_path / "c.yaml"
    path.write_text(text + _TASKS)
    return path


def test_config_manager_seed_precedence(tmp_path, monkeypatch):
    path = _config(tmp_path)
    monkeypatch.delenv("STREET_SCENE_SEED", raising=False)
    assert (ConfigManager(path).seed, ConfigManager(path).seed_source) == (5, "config")
    assert ConfigManager(_config(tmp_path, "")).seed_source == "default"
    assert ConfigManager(_config(tmp_path, "")).get_config()["seed"] == 42
    monkeypatch.setenv("STREET_SCENE_SEED", "123")
    path = _config(tmp_path)
    cm = ConfigManager(path)
    assert (cm.seed, cm.seed_source, cm.get_config()["seed"]) == (123, "env", 123)
    cm = ConfigManager(path, seed=7)
    assert (cm.seed, cm.seed_source, cm.get_config()["seed"]) == (7, "cli", 7)


def test_resolved_seed_is_part_of_the_hash(tmp_path, monkeypatch):
    path = _config(tmp_path)
    monkeypatch.delenv("STREET_SCENE_SEED", raising=False)
    from_config = ConfigManager(path).get_config_hash()
    monkeypatch.setenv("STREET_SCENE_SEED", "5")
    assert ConfigManager(path).get_config_hash() == from_config  # same value, different source
    monkeypatch.setenv("STREET_SCENE_SEED", "6")
    assert ConfigManager(path).get_config_hash() != from_config


# ---------------------------------------------------------------- seed_everything


def _draw():
    return (random.random(), float(np.random.rand()), torch.rand(3).tolist(), torch.randn(2, 2).sum().item())


def test_seed_everything_makes_all_rngs_reproducible(restore_torch_determinism):
    seed_everything(123)
    first = _draw()
    seed_everything(123)
    assert _draw() == first
    seed_everything(124)
    assert _draw() != first


def test_seed_everything_reproduces_a_tiny_training_step(restore_torch_determinism):
    def step():
        seed_everything(7)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(16, 4), torch.randn(16, 1)
        loss = torch.nn.functional.mse_loss(model(torch.nn.functional.dropout(x, 0.5)), y)
        loss.backward()
        opt.step()
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(step(), step()):
        assert torch.equal(a, b)


def test_seed_everything_reports_the_settings_in_force(restore_torch_determinism):
    settings = seed_everything(1)
    assert settings == determinism_settings()
    assert settings["deterministic_algorithms"] is True and torch.are_deterministic_algorithms_enabled()
    assert settings["cudnn_deterministic"] is True and torch.backends.cudnn.deterministic
    assert settings["cudnn_benchmark"] is False and not torch.backends.cudnn.benchmark
    assert settings["cublas_workspace_config"] == os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert settings["torch_num_threads"] == torch.get_num_threads()
    assert os.environ["PYTHONHASHSEED"] == "1"


def test_seed_everything_keeps_a_users_cublas_setting(restore_torch_determinism, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    assert seed_everything(1)["cublas_workspace_config"] == ":16:8"


def test_seed_everything_non_deterministic_mode(restore_torch_determinism):
    settings = seed_everything(1, deterministic=False)
    assert settings["deterministic_algorithms"] is False and not torch.are_deterministic_algorithms_enabled()
    assert settings["cudnn_deterministic"] is False


def test_determinism_settings_reflect_later_changes(restore_torch_determinism):
    """What metadata records is read back from torch, not remembered (ultralytics may switch flags off)."""
    seed_everything(1)
    torch.use_deterministic_algorithms(False)
    assert determinism_settings()["deterministic_algorithms"] is False


def test_seed_everything_accepts_the_largest_seed(restore_torch_determinism):
    seed_everything(2**32 - 1)
    assert torch.initial_seed() == 2**32 - 1


# ---------------------------------------------------------------- DataLoader determinism


class _Augmented(Dataset):
    """Returns the index plus 'augmentation' draws from numpy, python random and torch."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        return torch.tensor([float(i), float(np.random.rand()), random.random(), torch.rand(()).item()])


def _batches(workers, seed=3, worker_init_fn=seed_worker):
    loader = DataLoader(_Augmented(), batch_size=3, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(seed), worker_init_fn=worker_init_fn if workers else None)
    return [b.clone() for b in loader]


def test_shuffle_order_same_with_0_and_2_workers():
    order0 = [b[:, 0].tolist() for b in _batches(0)]
    order2 = [b[:, 0].tolist() for b in _batches(2)]
    assert order0 == order2
    assert sorted(sum(order0, [])) == [float(i) for i in range(12)]
    assert sum(order0, []) != [float(i) for i in range(12)]  # it did shuffle


def test_two_worker_batches_are_reproducible():
    first, second = _batches(2), _batches(2)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    other = _batches(2, seed=4)
    assert any(not torch.equal(a, b) for a, b in zip(first, other))


def test_each_worker_gets_its_own_numpy_and_random_streams():
    # Batch 0 comes from worker 0 and batch 1 from worker 1: their "augmentations" must differ.
    batches = _batches(2)
    assert batches[0][0, 1] != batches[1][0, 1]
    assert batches[0][0, 2] != batches[1][0, 2]


def test_seed_worker_derives_from_torch_initial_seed():
    torch.manual_seed(99)
    seed_worker(0)
    a = (random.random(), np.random.rand())
    torch.manual_seed(99)
    seed_worker(1)  # the worker id is already folded into torch's per-worker seed
    assert (random.random(), np.random.rand()) == a


def test_seed_rngs_seeds_python_numpy_and_torch_without_switching_determinism(restore_torch_determinism):
    before = determinism_settings()
    seed_rngs(5)
    a = (random.random(), float(np.random.rand()), torch.rand(()).item())
    seed_rngs(5)
    assert (random.random(), float(np.random.rand()), torch.rand(()).item()) == a
    assert determinism_settings() == before


def test_determinism_restored_puts_back_every_switch_seed_everything_sets(restore_torch_determinism):
    import torch.utils.deterministic

    before = (determinism_settings(), torch.utils.deterministic.fill_uninitialized_memory,
              os.environ.get("PYTHONHASHSEED"))
    with determinism_restored():
        changed = seed_everything(3)
        torch.utils.deterministic.fill_uninitialized_memory = not before[1]
    assert changed != before[0]  # the block did change something
    assert (determinism_settings(), torch.utils.deterministic.fill_uninitialized_memory,
            os.environ.get("PYTHONHASHSEED")) == before
