"""One Ray instance and one raymlp home (MLflow store, storage) for the whole test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _has_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def raymlp_home(tmp_path_factory) -> Path:
    """A fresh raymlp home: the MLflow store and the storage root live here."""
    from raymlp import _config

    home = tmp_path_factory.mktemp("raymlp-home")
    for var in list(os.environ):
        if var.startswith("RAYMLP_") or var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
            del os.environ[var]
    os.environ["RAYMLP_HOME"] = str(home)
    _config.reset()
    return home


@pytest.fixture(scope="session")
def ray_session(raymlp_home, request):
    """The session's local Ray instance, started through raymlp.init().

    It shows Ray no GPU unless the session runs GPU tests (``-m gpu``), so the CPU suite
    behaves the same on a GPU host.
    """
    import raymlp

    wants_gpu = any("gpu" in item.keywords for item in request.session.items)
    info = raymlp.init(num_cpus=4, num_gpus=None if wants_gpu else 0)
    yield info
    raymlp.shutdown()


@pytest.fixture(scope="session")
def examples_path():
    sys.path.insert(0, str(REPO / "examples"))
    yield REPO / "examples"
    sys.path.remove(str(REPO / "examples"))
