"""``raymlp submit`` and ``raymlp jobs`` end to end against a real local Ray head.

The session's separate head (the ``ray_head`` fixture: ``raymlp._local.start``, free ports, its
own temp dir, no GPU; shared with the schedule tests), ended by killing only that head's
processes (never ``ray stop``, which would stop every Ray instance on the machine).
``--address`` is the Ray cluster (its GCS address); its job API is given with ``--dashboard``,
or found as the managed local head's, or given as an http:// URL to ``--address`` (which keeps
working).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from raymlp import _config
from raymlp.cluster import dashboard_url
from tests.helpers import free_port, wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kuberay"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def head(ray_head):
    return ray_head[0]


@pytest.fixture
def recorded(head, tmp_path, monkeypatch):
    """A raymlp home whose managed local head is the test head (as `raymlp up` records it)."""
    monkeypatch.setenv("RAYMLP_HOME", str(tmp_path))
    monkeypatch.delenv("RAYMLP_RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _config.reset()
    (tmp_path / "head.json").write_text(json.dumps(dataclasses.asdict(head)))
    yield head
    _config.reset()


def test_dashboard_url_is_derived_from_the_cluster_address(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYMLP_HOME", str(tmp_path))  # no managed head here
    monkeypatch.delenv("RAYMLP_RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _config.reset()
    try:
        assert dashboard_url("10.0.0.5:6379") == "http://10.0.0.5:8265"
        assert dashboard_url("ray://head.team-a.svc:10001") == "http://head.team-a.svc:8265"
        assert dashboard_url("https://ray.example.com/") == "https://ray.example.com"
        assert dashboard_url("10.0.0.5:6379", dashboard="http://10.0.0.5:9999") == "http://10.0.0.5:9999"
        from raymlp.errors import ConfigError

        with pytest.raises(ConfigError, match="raymlp up"):
            dashboard_url(None)
    finally:
        _config.reset()


@pytest.mark.timeout(180)
def test_submit_runs_the_training_example_to_succeeded(head, cli):
    code, out, err = cli(
        "submit", "--address", head.address, "--dashboard", head.dashboard_url, "--working-dir", str(EXAMPLES),
        "--runtime", "image",  # this head runs the test environment, raymlp included
        "--timeout", "120", "--", "python", "tiny_train.py", "--steps", "5",
    )
    assert code == 0, err
    assert "step 4 loss" in out and "trained w=" in out  # the job's own log, streamed
    # Nothing says where results go: submit warns that they would stay on the head.
    assert "warning: the job's RAYMLP_TRACKING_URI and RAYMLP_STORAGE_ROOT are not set here" in err
    job_id = err.split("submitted job ")[1].split()[0]
    assert f"job {job_id} SUCCEEDED" in err
    # An http:// dashboard URL given as --address keeps working.
    code, out, _ = cli("jobs", "status", job_id, "--address", head.dashboard_url)
    assert code == 0 and out.startswith(f"{job_id}: SUCCEEDED")
    code, out, _ = cli("jobs", "list", "--address", head.address, "--dashboard", head.dashboard_url)
    assert code == 0 and any(line.startswith(job_id) and "SUCCEEDED" in line for line in out.splitlines())
    code, out, _ = cli("jobs", "logs", job_id, "--dashboard", head.dashboard_url)
    assert code == 0 and "trained w=" in out


@pytest.mark.timeout(240)
def test_submit_runs_a_raymlp_training_job_inside_a_ray_job(recorded, cli):
    """raymlp.init() inside a submitted job joins the job's cluster and trains on it; with no
    --address the job goes to the managed local head."""
    code, out, err = cli(
        "submit", "--working-dir", str(EXAMPLES.parent),
        "--timeout", "200", "--", "python", "train_digits.py", "--epochs", "2",
        "--workers", "2", "--cpus-per-worker", "0.5", "--register", "submitted-digits",
    )
    assert code == 0, out[-3000:] + err[-3000:]
    assert "models:/submitted-digits@champion" in out  # the job's closing summary, streamed
    assert " SUCCEEDED" in err


@pytest.mark.timeout(120)
def test_failing_entrypoint_exits_nonzero_with_its_log_tail(recorded, cli):
    code, _, err = cli(
        "submit", "--address", recorded.address, "--timeout", "60", "--",
        "python", "-c", "print('about to fail'); import sys; sys.exit(3)",
    )
    assert code == 1
    assert "FAILED" in err
    tail = err.split("last lines of the job's log:")[1]
    assert "about to fail" in tail


@pytest.mark.timeout(120)
def test_jobs_stop_stops_a_running_job(recorded, cli):
    code, out, _ = cli("submit", "--no-wait", "--", "python", "-c", "import time; time.sleep(60)")
    assert code == 0
    job_id = out.strip()
    code, out, _ = cli("jobs", "stop", job_id)
    assert code == 0
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(recorded.dashboard_url)
    wait_for("the job to stop", lambda: str(client.get_job_status(job_id).value) in ("STOPPED", "FAILED"), timeout=30)
    code, out, _ = cli("jobs", "status", job_id)
    assert code == 1 and "STOPPED" in out


@pytest.mark.timeout(30)
def test_a_process_that_runs_ray_itself_submits_to_the_head_it_names(head, monkeypatch):
    """raymlp.init() sets RAY_ADDRESS (for Ray Train), and Ray's job SDK prefers RAY_ADDRESS to
    the address it is given: the client must still talk to the head named."""
    from raymlp.cluster import connect

    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")  # nothing listens there
    client = connect(head.dashboard_url)
    assert isinstance(client.list_jobs(), list)
    assert os.environ["RAY_ADDRESS"].startswith("127.0.0.1:")  # left as it was


def test_unreachable_address_fails_within_seconds(cli):
    port = free_port()  # nothing listens there
    start = time.monotonic()
    code, _, err = cli("submit", "--dashboard", f"http://127.0.0.1:{port}", "--", "python", "-c", "1")
    assert code == 2 and "cannot reach the Ray head's job API" in err
    assert time.monotonic() - start < 10
    # A black-holed address (TEST-NET-1 is never routed) is cut off by the connect timeout.
    from raymlp.cluster import JobConnectionError, connect

    start = time.monotonic()
    with pytest.raises(JobConnectionError):
        connect("http://192.0.2.1:8265", timeout_s=1.0)
    assert time.monotonic() - start < 5
