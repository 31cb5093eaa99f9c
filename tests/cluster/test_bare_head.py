"""raymlp on a stock Ray cluster: a token-authenticated, two-node Ray from an environment that
has only what the ``rayproject/ray`` image has, with results going to a tracking server and S3.

One cluster serves the whole module (it is the expensive part):

* a virtual environment holding only ``ray[default,train,tune,serve]`` and torch
  (``bare_env.build``: no raymlp, no MLflow), standing in for the image;
* a Ray head from it with token authentication on, and a second node (``ray start --address``,
  its own temp dir and a ``node2`` resource), each with the S3 credentials in its environment as
  a KubeRay pod gets them from a Secret; pip on the nodes reads a local package index
  (``bare_env.link_wheelhouse``) as an air-gapped cluster reads its mirror;
* a real S3 HTTP endpoint (moto's standalone server) and an MLflow tracking server storing its
  artifacts there.

The job is submitted from here with ``raymlp submit --token``: raymlp ships itself and its
requirements, nothing is added by hand.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from raymlp import _config
from raymlp.cluster import _ship, connect
from tests.cluster import bare_env, ray_nodes
from tests.cluster.conftest import BUCKET
from tests.helpers import free_port, kill_nodes, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "kuberay"
TOKEN = "raymlp-test-token-0123456789abcdef0123456789abcdef"
EPOCHS = 5


@pytest.fixture(scope="module")
def tracking_server(s3, tmp_path_factory):
    """An MLflow tracking server whose artifacts live in the S3 bucket."""
    env, _ = s3
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    with open(folder / "server.log", "w") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port",
             str(port), "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
             "--artifacts-destination", f"s3://{BUCKET}/mlflow", "--serve-artifacts"],
            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        yield url, proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # its store is a throwaway: no graceful stop needed
        proc.wait(timeout=20)


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def cluster(s3, tracking_server, tmp_path_factory):
    """The bare two-node cluster with token authentication (head, node2)."""
    env, _ = s3
    root = tmp_path_factory.mktemp("bare")
    bin_dir = bare_env.build(root / "venv")
    wheelhouse = bare_env.link_wheelhouse(root / "wheels", tuple(_ship.requirements(("torch", "s3"))))
    node_env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN,
                "PIP_FIND_LINKS": str(wheelhouse), "PIP_NO_INDEX": "1"}
    head = ray_nodes.start(bin_dir, num_cpus=2, env={**node_env, "RAYMLP_TEST_NODE": "head"},
                           timeout_s=240, wait=False)
    nodes = [head]
    try:
        # The second node joins while the head's dashboard is still coming up.
        nodes.append(ray_nodes.start(bin_dir, num_cpus=1, resources={"node2": 1}, head=head,
                                     env={**node_env, "RAYMLP_TEST_NODE": "node2"}, timeout_s=240))
        ray_nodes.wait_ready(head, timeout_s=240)
        wait_for("the MLflow tracking server", lambda: _up(tracking_server[0]), timeout=120, period=0.5)
        yield head, nodes[1], bin_dir
    finally:
        kill_nodes(*nodes)


@pytest.fixture
def remote_config(monkeypatch, s3, tracking_server):
    """This machine configured for the cluster's tracking server and S3 storage root."""
    monkeypatch.setenv("RAYMLP_TRACKING_URI", tracking_server[0])
    monkeypatch.setenv("RAYMLP_STORAGE_ROOT", f"s3://{BUCKET}/storage")
    for key, value in s3[0].items():
        monkeypatch.setenv(key, value)
    for var in ("RAYMLP_RAY_TOKEN", "RAY_AUTH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/nonexistent/raymlp-test-token")  # no token file
    _config.reset()
    yield
    _config.reset()


def test_without_the_token_submit_says_so_in_one_line_and_exits_2(cluster, remote_config, cli):
    head = cluster[0]
    code, out, err = cli("submit", "--dashboard", head.dashboard_url, "--", "python", "-c", "1")
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()  # one line, no traceback
    assert head.dashboard_url in line and "--token" in line and "RAYMLP_RAY_TOKEN" in line
    code, _, err = cli("jobs", "list", "--dashboard", head.dashboard_url, "--token", "not-the-token")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "refused the token" in err


def _node2_train_worker(node2) -> object | None:
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or ())
            if "raylet" in cmd.split(" ")[0] and node2.temp_dir in cmd:
                for child in proc.children(recursive=True):
                    if "RayTrainWorker" in " ".join(child.cmdline()):
                        return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def _keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_submitted_training_ships_raymlp_spreads_survives_a_killed_node_and_keeps_results_off_the_head(
        cluster, remote_config, s3, tracking_server, cli):
    head, node2, _ = cluster
    client_s3 = s3[1]
    code, out, err = cli(
        "submit", "--dashboard", head.dashboard_url, "--token", TOKEN, "--working-dir", str(EXAMPLES),
        "--no-wait", "--", "python", "train_ddp.py", "--workers", "2", "--gpus-per-worker", "0",
        "--backend", "gloo", "--epochs", str(EPOCHS), "--samples", "4096", "--placement", "SPREAD")
    assert code == 0, err
    job_id = out.strip()
    jobs = connect(head.dashboard_url, token=TOKEN)
    # The runtime that travelled is exactly the image recipe's (acceptance 5).
    shipped = jobs.get_job_info(job_id).runtime_env
    dockerfile = (REPO / "cluster" / "image" / "Dockerfile").read_text()
    assert _pip_list(shipped) == _ship.dockerfile_requirements(dockerfile)

    def status() -> str:
        return str(jobs.get_job_status(job_id).value)

    # Kill the training worker on the second node once a checkpoint is on S3.
    wait_for("a checkpoint on S3", lambda: status() in ("SUCCEEDED", "FAILED") or any(
        "checkpoint_" in k for k in _keys(client_s3, "storage/")), timeout=400, period=1)
    assert status() == "RUNNING", jobs.get_job_logs(job_id)[-3000:]
    victim = wait_for("the training worker on node2", lambda: _node2_train_worker(node2), timeout=60)
    victim.send_signal(signal.SIGKILL)
    wait_for("the job to end", lambda: status() in ("SUCCEEDED", "FAILED", "STOPPED"),
             timeout=400, period=1)
    logs = jobs.get_job_logs(job_id)
    assert status() == "SUCCEEDED", logs[-4000:]
    assert f"after {EPOCHS} epochs" in logs

    # The run is on the tracking server, its checkpoints and model on the S3 root.
    from mlflow.tracking import MlflowClient

    mlflow = MlflowClient(tracking_uri=tracking_server[0])
    (run,) = mlflow.search_runs([mlflow.get_experiment_by_name("raymlp").experiment_id],
                                filter_string="tags.`raymlp.kind` = 'train'")
    assert run.info.status == "FINISHED"
    storage = run.data.tags["raymlp.storage"]
    assert storage.startswith(f"s3://{BUCKET}/storage/")
    prefix = storage.removeprefix(f"s3://{BUCKET}/")
    stored = _keys(client_s3, prefix)
    assert any("/checkpoint_" in k for k in stored) and any("/model/MLmodel" in k for k in stored)
    assert any(k.endswith("MLmodel") for k in _keys(client_s3, "mlflow/")), "model artifacts on S3"
    # Resumed from the checkpoint: every epoch logged once or (the one interrupted) twice, the
    # first one once, and the run reached the last one.
    history = mlflow.get_metric_history(run.info.run_id, "loss")
    steps = [m.step for m in history]
    assert steps.count(0) == 1 and sorted(set(steps)) == list(range(EPOCHS))
    assert not victim.is_running()
    # Nothing of the run stayed on the head.
    assert not [p for p in Path(head.temp_dir).rglob("mlflow.db")]


def _pip_list(runtime_env: dict) -> list[str]:
    pip = runtime_env.get("pip")
    return list(pip["packages"] if isinstance(pip, dict) else pip)


def test_a_replica_on_the_second_node_answers_through_the_head_ingress(cluster, remote_config, cli):
    head, _, _ = cluster
    port = free_port()
    code, out, err = cli(
        "submit", "--dashboard", head.dashboard_url, "--token", TOKEN, "--runtime", "image",
        "--working-dir", str(Path(__file__).parent), "--timeout-s", "300", "--",
        "python", "node2_app.py", str(port))
    assert code == 0, err
    assert "deployed" in out

    def answer():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/where", timeout=5) as resp:
                return json.loads(resp.read())
        except OSError:
            return None

    body = wait_for("the replica's answer through the head's proxy", answer, timeout=120, period=1)
    assert body["node"] == "node2"
    assert {answer()["node"] for _ in range(3)} == {"node2"}


def test_raymlp_init_connects_with_the_token_and_explains_without_it(cluster, tmp_path):
    head, _, _ = cluster
    code = ("import raymlp, sys\n"
            "try:\n"
            f"    info = raymlp.init({head.address!r}, token=sys.argv[1] or None)\n"
            "except raymlp.RaymlpError as exc:\n"
            "    print('ERR', exc); sys.exit(2)\n"
            "print('CPUS', info.resources.get('CPU'), info.resources.get('node2'))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RAYMLP_"))}
    env.update(RAYMLP_HOME=str(tmp_path), RAY_AUTH_TOKEN_PATH=str(tmp_path / "no-token"))
    # Both at once: a refused client retries for a while before Ray gives up.
    procs = [subprocess.Popen([sys.executable, "-c", code, token], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for token in (TOKEN, "")]
    (ok_out, ok_err), (refused_out, refused_err) = (p.communicate(timeout=180) for p in procs)
    assert procs[0].returncode == 0 and "CPUS 3.0 1.0" in ok_out, ok_err[-3000:]
    assert procs[1].returncode == 2, (refused_out, refused_err[-3000:])
    (line,) = refused_out.strip().splitlines()
    assert "RAYMLP_RAY_TOKEN" in line and head.address in line
