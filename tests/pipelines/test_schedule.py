"""Schedules: cron fire times are croniter's; an interval schedule fires on time within its
concurrency bound and stops when paused; a schedule on a Ray head outlives the process that
created it and survives a restart of its scheduler."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from raymlp.errors import SpecError
from raymlp.pipelines import Schedule
from raymlp.pipelines._schedule import SCHEDULER_NAME, SCHEDULER_NAMESPACE
from tests.helpers import wait_for

SLEEPY = """
import json, os, time
from raymlp.pipelines import component, pipeline

@component(cpus=0, cache=False)
def nap(log: str, seconds: float) -> int:
    start = time.time()
    time.sleep(seconds)
    with open(os.path.join(log, f"run-{{start:.3f}}.json"), "w") as fh:
        json.dump({{"start": start, "end": time.time()}}, fh)
    return 1

@pipeline(name="sleepy")
def sleepy(log: str = {log!r}, seconds: float = {seconds}):
    nap(log=log, seconds=seconds)
"""


def spans(log: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in log.glob("run-*.json")),
                  key=lambda s: s["start"])


def test_cron_next_fire_times_match_croniter():
    from croniter import croniter

    base = datetime(2026, 3, 1, 12, 34, 56, tzinfo=timezone.utc)
    spec = Schedule(name="nightly", pipeline="x:y", cron="*/15 2-4 * * 1-5")
    ours = spec.next_fire_times(6, after=base.timestamp())
    it = croniter("*/15 2-4 * * 1-5", base)
    assert ours == [it.get_next(float) for _ in range(6)]
    every = Schedule(name="often", pipeline="x:y", interval_s=2)
    assert every.next_fire_times(3, after=100.0) == [102.0, 104.0, 106.0]
    with pytest.raises(SpecError, match="Schedule.cron"):
        Schedule(name="bad", pipeline="x:y", cron="every tuesday")
    with pytest.raises(SpecError, match="exactly one"):
        Schedule(name="bad", pipeline="x:y")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_interval_schedule_fires_bounded_and_pauses(ray_session, tmp_path):
    import ray

    log = tmp_path / "log"
    log.mkdir()
    module = tmp_path / "sleepy_flow.py"
    module.write_text(SLEEPY.format(log=str(log), seconds=2.5))
    handle = Schedule(name="every-2s", pipeline=f"{module}:sleepy", interval_s=2,
                      max_concurrency=1).create()
    try:
        created = time.time()
        wait_for("3 scheduled runs", lambda: len(spans(log)) >= 2 and
                 handle.status()["fired"] >= 3, timeout=40)
        fired_after_s = time.time() - created
        handle.pause()
        paused_at = handle.status()["fired"]
        wait_for("the active run to end", lambda: not handle.status()["active"], timeout=30)
        time.sleep(3)
        assert handle.status()["fired"] == paused_at
        runs = spans(log)
        for a, b in itertools.pairwise(runs):
            assert b["start"] >= a["end"] - 0.05, "two runs overlapped (max_concurrency=1)"
        assert fired_after_s < 20, fired_after_s
    finally:
        handle.delete()
        ray.kill(ray.get_actor(SCHEDULER_NAME, namespace=SCHEDULER_NAMESPACE))


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head started with `ray start --head` (as `raymlp serve` does when no cluster is
    configured), with its own temp dir, ports and raymlp home; no dashboard (schedules need
    none), so it comes up fast on a busy machine. Stopped by its temp dir, nothing else."""
    import shutil
    import tempfile

    from raymlp import _local
    from raymlp._util import free_ports

    home = tmp_path_factory.mktemp("sched-home")
    temp_dir = tempfile.mkdtemp(prefix="rmlp-sched-", dir="/tmp")
    gcs, client, node_mgr, obj_mgr, metrics, agent, runtime_env = ports = free_ports(7)
    low = max(free_ports(1)[0], 20000)
    while any(low <= p <= low + 100 for p in ports):
        low = max(free_ports(1)[0], 20000)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAYMLP_"))}
    env.update(RAYMLP_HOME=str(home), RAY_AUTH_MODE="disabled")
    cmd = [shutil.which("ray", path=str(Path(sys.executable).parent)), "start", "--head",
           f"--temp-dir={temp_dir}", f"--port={gcs}", "--include-dashboard=false",
           "--node-ip-address=127.0.0.1",
           f"--ray-client-server-port={client}", f"--node-manager-port={node_mgr}",
           f"--object-manager-port={obj_mgr}", f"--metrics-export-port={metrics}",
           f"--dashboard-agent-grpc-port={agent}", f"--runtime-env-agent-port={runtime_env}",
           f"--min-worker-port={low}", f"--max-worker-port={low + 100}", "--num-cpus=2",
           "--num-gpus=0", "--disable-usage-stats"]
    head = _local.Head(address=f"127.0.0.1:{gcs}", dashboard_url="", temp_dir=temp_dir)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180,
                             check=False)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        yield head, home
    finally:
        _local.stop(head)


def _on_head(head, home: Path, code: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RAYMLP_"))}
    env.update(RAY_ADDRESS=head.address, RAYMLP_HOME=str(home))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_schedule_outlives_creator_and_scheduler_restart(ray_head, tmp_path):
    head, home = ray_head
    log = tmp_path / "log"
    log.mkdir()
    module = tmp_path / "tick_flow.py"
    module.write_text(SLEEPY.format(log=str(log), seconds=0.0))
    _on_head(head, home, f"""
        from raymlp.pipelines import Schedule
        Schedule(name="tick", pipeline={f'{module}:sleepy'!r}, interval_s=1, track=False).create()
    """)
    # the creating process has exited: the schedule keeps firing on the head
    wait_for("2 runs after the creator exited", lambda: len(spans(log)) >= 2, timeout=90)
    state = json.loads((home / "pipelines" / "schedules.json").read_text())["tick"]
    assert state["fired"] >= 2 and state["enabled"]
    _on_head(head, home, f"""
        import ray, raymlp
        from raymlp.pipelines import ScheduleHandle
        raymlp.init()
        ray.kill(ray.get_actor({SCHEDULER_NAME!r}, namespace={SCHEDULER_NAMESPACE!r}))
        print(ScheduleHandle("tick").status()["fired"])
    """)
    before = len(spans(log))
    wait_for("runs after the scheduler restarted", lambda: len(spans(log)) >= before + 2,
             timeout=90)
    state = json.loads((home / "pipelines" / "schedules.json").read_text())["tick"]
    assert state["restarts"] >= 1 and state["fired"] >= before + 1
    assert state["runs"] and all((home / "pipelines" / "runs" / r / "run.json").is_file()
                                 for r in state["runs"][-3:])
