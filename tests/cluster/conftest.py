"""Fixtures for the cluster capability's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

import raymlp.cli

REPO_ROOT = Path(__file__).resolve().parents[2]
# KubeRay v1.7.0's CRDs and samples live beside the repository (CI lays shared/ out the same way).
CRD_DIR = REPO_ROOT.parent / "shared" / "kuberay-crds"
BUCKET = "raymlp"


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


@pytest.fixture(scope="session")
def s3():
    """A real S3 HTTP endpoint (moto's standalone server, one per session: importing it takes
    seconds) with bucket ``raymlp``, each test module under its own prefix; yields the
    environment that reaches it (credentials, ``AWS_ENDPOINT_URL``, ``MLFLOW_S3_ENDPOINT_URL``)
    and a boto3 client."""
    import boto3
    from moto.server import ThreadedMotoServer

    from raymlp._util import free_ports

    port = free_ports(1)[0]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
           "MLFLOW_S3_ENDPOINT_URL": endpoint}
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield env, client
    finally:
        server.stop()
