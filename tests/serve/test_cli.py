"""``raymlp serve`` on a machine with nothing configured (acceptance 8): subprocesses in a clean
environment (no RAY_ADDRESS, no RAYMLP_* but a fresh RAYMLP_HOME), working in a temporary
directory that holds a model the test saved. ``deploy`` starts and announces a managed local
Ray head and prints the URL, a second command reaches the same service, ``raymlp up`` finds
that head, ``raymlp down`` stops exactly what was started (one head for the whole check: each
costs ~30 s on 2 cores). Also: a service YAML file with ``--set`` overrides, and ``schema``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import requests

from tests.helpers import free_port, infer_body, wait_for

pytestmark = pytest.mark.timeout(600)


def _clean_env(home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAYMLP_", "RAY_")) and k != "MLFLOW_TRACKING_URI"}
    env["RAYMLP_HOME"] = str(home)
    return env


def _raymlp(args, env, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "raymlp.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _head_processes(temp_dir: str) -> list[int]:
    import psutil

    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in proc.info["cmdline"] or ()):
                pids.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


@pytest.fixture
def workdir(tmp_path):
    """A working directory with a saved model, and a raymlp home whose head is stopped at the
    end whatever happened."""
    from sklearn.linear_model import LogisticRegression

    from raymlp import tracking

    rng = np.random.RandomState(3)
    x = rng.rand(100, 4).astype(np.float32)
    model = LogisticRegression().fit(x, (x[:, 0] > x[:, 1]).astype(np.int64))
    tracking.save_model(model, tmp_path / "model", flavor="sklearn", input_example=x[:5])
    home = tmp_path / "home"
    env = _clean_env(home)
    yield {"dir": tmp_path, "env": env, "home": home, "x": x, "model": model}
    _raymlp(["down"], env, tmp_path, timeout=120)


def test_deploy_with_nothing_configured_starts_a_local_head_that_up_finds_and_down_stops(workdir):
    env, cwd = workdir["env"], workdir["dir"]
    port = free_port()
    out = _raymlp(["serve", "deploy", "--name", "x", "--model", "model", "--cpus", "0.5",
                   "--port", str(port)], env, cwd, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    url = out.stdout.strip().splitlines()[-1]
    assert url == f"http://127.0.0.1:{port}/x"
    console = out.stdout + out.stderr
    assert "starting a local Ray head" in out.stderr and "raymlp down" in out.stderr
    assert "deploying x" in console and "service x is RUNNING" in out.stdout
    for noise in ("INFO", "Started Serve", "ServeController", "Deployed app", "Warning"):
        assert noise not in console, (noise, console[-3000:])

    x = workdir["x"][:6]
    r = requests.post(f"{url}/v2/models/x/infer", json=infer_body(x), timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == workdir["model"].predict(x).tolist()

    status = _raymlp(["serve", "status", "x"], env, cwd, timeout=120)
    assert status.returncode == 0, status.stderr[-3000:]
    st = json.loads(status.stdout)
    assert st["status"] == "RUNNING" and st["url"] == url and st["replicas"] == 1
    assert st["stable"]["uri"] == str(cwd / "model")  # made absolute for the replicas

    head = json.loads((workdir["home"] / "head.json").read_text())
    assert _head_processes(head["temp_dir"])
    # `raymlp up` finds the head the deploy started instead of starting another, and a program
    # joins it as an ordinary Ray cluster.
    up = _raymlp(["up"], env, cwd, timeout=120)
    assert up.returncode == 0 and up.stdout.strip() == head["address"], up.stderr
    assert "already up" in up.stderr
    code = (f"import ray; ray.init(address={head['address']!r}, logging_level='ERROR'); "
            "print(ray.cluster_resources()['CPU'] > 0)")
    joined = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env={**env, "RAY_AUTH_MODE": "disabled"}, check=False)
    assert joined.stdout.strip().splitlines()[-1:] == ["True"], joined.stderr[-2000:]
    down = _raymlp(["down"], env, cwd, timeout=120)
    assert down.returncode == 0 and head["address"] in down.stdout, down.stderr
    assert _head_processes(head["temp_dir"]) == []

    def unreachable():
        try:
            requests.get(f"{url}/v2/health/live", timeout=5)
        except requests.ConnectionError:
            return True
        return None

    # The ingress (HAProxy) sometimes exits a moment after `down` returned.
    wait_for("the service URL to stop answering", unreachable, timeout=30)
    gone = _raymlp(["serve", "status", "x"], env, cwd, timeout=120)
    assert gone.returncode == 2 and "raymlp up" in gone.stderr  # no head started for a status
    assert not (workdir["home"] / "head.json").exists()
    again = _raymlp(["down"], env, cwd, timeout=120)
    assert again.returncode == 0 and "no local Ray head to stop" in again.stdout


def test_deploy_file_with_set_overrides_names_a_bad_field(tmp_path):
    """A YAML service with an unknown field or an ill-typed value fails before any cluster
    work, naming the field; a valid one parses to the same spec the flags build."""
    import argparse

    from raymlp import cli, serve
    from raymlp._spec import from_data
    from raymlp.serve._cli import spec_data

    env = _clean_env(tmp_path / "home")
    (tmp_path / "svc.yaml").write_text(
        "name: digits\nmodel: models:/digits@champion\nresources: {cpus: 0.5}\n"
        "autoscaling: {min_replicas: 0, max_replicas: 3}\n")
    parser = cli.build_parser()
    args = parser.parse_args(["serve", "deploy", str(tmp_path / "svc.yaml"), "--gpus", "0.25",
                              "--max-wait-s", "0.01", "--max-batch-size", "8",
                              "--set", "autoscaling.max_replicas=4", "--set", "access_log=true"])
    assert isinstance(args, argparse.Namespace)
    spec = from_data(serve.InferenceService, spec_data(args))
    assert spec == serve.InferenceService(
        name="digits", model="models:/digits@champion", access_log=True,
        resources=serve.Resources(cpus=0.5, gpus=0.25),
        autoscaling=serve.Autoscaling(min_replicas=0, max_replicas=4),
        batching=serve.Batching(max_batch_size=8, max_wait_s=0.01))

    for extra, fragment in (
            (["--set", "resources.num_cpus=1"],
             "InferenceService.resources: unknown field 'num_cpus'"),
            (["--set", "replicas=two"], "InferenceService.replicas must be"),
            (["--set", "canary_percent=true"], "InferenceService.canary_percent must be")):
        out = _raymlp(["serve", "deploy", str(tmp_path / "svc.yaml"), *extra], env, tmp_path,
                      timeout=120)
        assert out.returncode == 2 and fragment in out.stderr, (extra, out.stderr[-2000:])
        assert not (tmp_path / "home" / "head.json").exists()  # failed before any cluster work


def test_schema_validates_a_service_file(tmp_path):
    import jsonschema
    import yaml

    env = _clean_env(tmp_path / "home")
    out = _raymlp(["serve", "schema"], env, tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    good = yaml.safe_load("name: digits\nmodel: models:/digits@champion\n"
                          "resources: {cpus: 0.5, memory: 1073741824}\n"
                          "batching: {max_batch_size: 8, max_wait_s: 0.01}\n"
                          "transformer: my_module:Scale\n")
    jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError, match="num_cpus"):
        jsonschema.validate({**good, "resources": {"num_cpus": 1}}, schema)
