"""``raymlp submit`` and ``raymlp jobs`` end to end against a real local Ray head.

One head per module, started with ``ray start --head`` on free ports with its own temp dir
and ``--num-cpus=1``; teardown ends only the processes of that head (found by its temp dir),
never ``ray stop``, which would stop every Ray instance on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kuberay"
RAY = str(Path(sys.executable).with_name("ray"))

pytestmark = pytest.mark.slow


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _own_processes(temp_dir: str) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in proc.info["cmdline"] or ()):
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


@pytest.fixture(scope="module")
def ray_head():
    # A short path: Ray's unix sockets live under it and must stay within 107 characters.
    temp_dir = tempfile.mkdtemp(prefix="rmlp-", dir="/tmp")
    (gcs, dash, agent_http, agent_grpc, metrics, client, runtime_env, node_mgr, obj_mgr,
     *_) = _free_ports(10)
    ports = (gcs, dash, agent_http, agent_grpc, metrics, client, runtime_env, node_mgr, obj_mgr)
    low = max(_free_ports(1)[0], 20000)
    while any(low <= p <= low + 200 for p in ports):  # Ray refuses a port inside the range
        low = max(_free_ports(1)[0], 20000)
    cmd = [
        RAY, "start", "--head", "--num-cpus=1", "--num-gpus=0", f"--temp-dir={temp_dir}",
        f"--port={gcs}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
        f"--ray-client-server-port={client}", f"--runtime-env-agent-port={runtime_env}",
        f"--node-manager-port={node_mgr}", f"--object-manager-port={obj_mgr}",
        f"--min-worker-port={low}", f"--max-worker-port={low + 200}", "--disable-usage-stats",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAYMLP_RAY_ADDRESS")}
    # Ray 2.60 turns token auth on for `ray start` when ~/.ray/auth_token exists (a local
    # ray.init() writes one); this test head opts out so the test does not depend on that file.
    env["RAY_AUTH_MODE"] = "disabled"
    # Job entrypoints run `python` from the head's PATH: make it this interpreter, with Ray.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0, f"ray start failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
        url = f"http://127.0.0.1:{dash}"
        from ray.job_submission import JobSubmissionClient

        deadline = time.monotonic() + 60
        while True:  # the job API comes up a moment after `ray start` returns
            try:
                JobSubmissionClient(url).list_jobs()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield url
    finally:
        procs = _own_processes(temp_dir)
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=5)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.timeout(180)
def test_submit_runs_the_training_example_to_succeeded(ray_head, cli):
    code, out, err = cli(
        "submit", "--address", ray_head, "--working-dir", str(EXAMPLES),
        "--timeout", "120", "--", "python", "tiny_train.py", "--steps", "5",
    )
    assert code == 0, err
    assert "step 4 loss" in out and "trained w=" in out  # the job's own log, streamed
    job_id = err.split("submitted job ")[1].split()[0]
    assert f"job {job_id} SUCCEEDED" in err
    code, out, _ = cli("jobs", "status", job_id, "--address", ray_head)
    assert code == 0 and out.startswith(f"{job_id}: SUCCEEDED")
    code, out, _ = cli("jobs", "list", "--address", ray_head)
    assert code == 0 and any(line.startswith(job_id) and "SUCCEEDED" in line for line in out.splitlines())
    code, out, _ = cli("jobs", "logs", job_id, "--address", ray_head)
    assert code == 0 and "trained w=" in out


@pytest.mark.timeout(240)
def test_submit_runs_a_raymlp_training_job_inside_a_ray_job(ray_head, cli):
    """raymlp.init() inside a submitted job joins the job's cluster and trains on it."""
    code, out, err = cli(
        "submit", "--address", ray_head, "--working-dir", str(EXAMPLES.parent),
        "--timeout", "200", "--", "python", "train_digits.py", "--epochs", "2",
        "--workers", "2", "--cpus-per-worker", "0.5", "--register", "submitted-digits",
    )
    assert code == 0, out[-3000:] + err[-3000:]
    assert "epochs=2" in out and "registered=models:/submitted-digits@champion" in out
    assert " SUCCEEDED" in err


@pytest.mark.timeout(120)
def test_failing_entrypoint_exits_nonzero_with_its_log_tail(ray_head, cli):
    code, _, err = cli(
        "submit", "--address", ray_head, "--timeout", "60", "--",
        "python", "-c", "print('about to fail'); import sys; sys.exit(3)",
    )
    assert code == 1
    assert "FAILED" in err
    tail = err.split("last lines of the job's log:")[1]
    assert "about to fail" in tail


@pytest.mark.timeout(120)
def test_jobs_stop_stops_a_running_job(ray_head, cli):
    code, out, _ = cli("submit", "--address", ray_head, "--no-wait", "--",
                       "python", "-c", "import time; time.sleep(60)")
    assert code == 0
    job_id = out.strip()
    code, out, _ = cli("jobs", "stop", job_id, "--address", ray_head)
    assert code == 0
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_head)
    deadline = time.monotonic() + 30
    while str(client.get_job_status(job_id).value) not in ("STOPPED", "FAILED"):
        assert time.monotonic() < deadline, "job did not stop"
        time.sleep(0.5)
    code, out, _ = cli("jobs", "status", job_id, "--address", ray_head)
    assert code == 1 and "STOPPED" in out


@pytest.mark.timeout(30)
def test_unreachable_address_fails_within_seconds(cli):
    (port,) = _free_ports(1)  # nothing listens there
    start = time.monotonic()
    code, _, err = cli("submit", "--address", f"http://127.0.0.1:{port}", "--", "python", "-c", "1")
    assert code == 2 and "cannot reach the Ray head's job API" in err
    assert time.monotonic() - start < 10
    # A black-holed address (TEST-NET-1 is never routed) is cut off by the connect timeout.
    from raymlp.cluster import JobConnectionError, connect

    start = time.monotonic()
    with pytest.raises(JobConnectionError):
        connect("http://192.0.2.1:8265", timeout=1.0)
    assert time.monotonic() - start < 5
