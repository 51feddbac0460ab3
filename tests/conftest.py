"""Test-session guards: no network, no writes outside tmp dirs.

Sockets are blocked for the whole session (loopback stays open for servers the tests start themselves),
so any code path that would download weights, fonts, datasets or check for updates fails loudly.
"""

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NETBLOCK_DIR = Path(__file__).resolve().parent / "netblock"
for p in (str(REPO_ROOT), str(NETBLOCK_DIR)):
    if p not in sys.path:
        sys.path.insert(0, p)


def pytest_configure(config):
    import sitecustomize as _netblock  # noqa: F401  (tests/netblock, installs on import)

    _netblock.install()
    # Set before anything imports ultralytics, in this process and in every subprocess a test starts.
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"


@pytest.fixture
def isolated_env(tmp_path, monkeypatch):
    """Run dir root, registry, ultralytics config and cwd all under tmp_path."""
    for var in ("STREET_SCENE_OUTPUT_DIR", "STREET_SCENE_REGISTRY", "STREET_SCENE_SEED"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("STREET_SCENE_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("STREET_SCENE_REGISTRY", str(tmp_path / "registry" / "model_registry.json"))
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo_config"))
    monkeypatch.setenv("STREET_SCENE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


OFFLINE_ENV = ("YOLO_OFFLINE", "YOLO_AUTOINSTALL", "YOLO_CONFIG_DIR", "ULTRALYTICS_API_KEY", "OMP_NUM_THREADS")


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """configure_ultralytics into a temp cache dir for the module; the process env, torch's thread count and
    determinism flags (raw ultralytics calls in a test change them) are restored afterwards."""
    from src.common.seeding import process_settings_restored
    from src.tasks.detection.offline import configure_ultralytics

    import torch

    saved = {k: os.environ.get(k) for k in OFFLINE_ENV}
    configure_ultralytics(tmp_path_factory.mktemp("cache") / "ultralytics")
    with process_settings_restored(torch.get_num_threads()):
        yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def cli_output():
    """The library's notes and warnings shown as the CLI shows them (stdout / stderr), for tests that call the
    library directly and read what a user would see."""
    from src.common.report import shown

    with shown():
        yield
