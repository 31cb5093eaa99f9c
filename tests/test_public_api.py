"""The public surface of each capability is what its __all__ lists; pinned here."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import raymlp

EXPECTED = {
    "raymlp.train": ["Backend", "Checkpointing", "Scaling", "TrainContext", "TrainJob",
                     "TrainResult", "WorkerInfo"],
    "raymlp.tracking": ["Run", "child_runs", "data_hash", "experiment_id", "get_run",
                        "get_version", "lineage", "load_model", "metric_history",
                        "register_model", "set_alias", "start_run"],
}


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_exported_members(module):
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(EXPECTED[module])
    for name in mod.__all__:
        assert getattr(mod, name) is not None


def test_import_raymlp_is_cheap_and_lazy():
    code = ("import sys, raymlp; print('mlflow' in sys.modules, 'torch' in sys.modules, "
            "'ray.train' in sys.modules); raymlp.train; print('ray.train' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False", "True"]
    assert raymlp.__version__


def test_cli_help_and_version():
    from raymlp import cli

    out = subprocess.run([sys.executable, "-m", "raymlp.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("train", "version", "cluster", "submit"):
        assert command in out
    ver = subprocess.run([sys.executable, "-m", "raymlp.cli", "version"], capture_output=True,
                         text=True, check=True).stdout
    assert ver.splitlines()[0] == f"raymlp {raymlp.__version__}"
    assert ver.splitlines()[1].startswith("ray 2.60")
    assert cli.main(["train"]) == 2  # no loop: a clear error, exit 2
