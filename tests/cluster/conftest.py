"""Fixtures for the cluster capability's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

import raymlp.cli

REPO_ROOT = Path(__file__).resolve().parents[2]
# KubeRay v1.7.0's CRDs and samples live beside the repository (CI lays shared/ out the same way).
CRD_DIR = REPO_ROOT.parent / "shared" / "kuberay-crds"


@pytest.fixture(scope="session")
def crd_dir() -> Path:
    if not (CRD_DIR / "ray.io_rayjobs.yaml").is_file():
        pytest.skip(f"KubeRay CRDs not found at {CRD_DIR}")
    return CRD_DIR


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``raymlp ...`` in-process through ``raymlp.cli.main``; returns (exit code, stdout, stderr).

    Only this capability's subcommands are registered, so these tests do not depend on the
    other capabilities' command modules.
    """
    monkeypatch.setattr(raymlp.cli, "_COMMAND_MODULES", ("raymlp.cluster._cli",))

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = raymlp.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run
