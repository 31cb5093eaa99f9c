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
        # Runs of 2.5 s every 2 s, one at a time: each fires as soon as the one before ends.
        wait_for("3 scheduled runs", lambda: handle.status()["fired"] >= 3, timeout=40,
                 period=0.1)
        fired_after_s = time.time() - created
        wait_for("2 finished runs", lambda: len(spans(log)) >= 2, timeout=30)
        handle.pause()
        paused_at = handle.status()["fired"]
        wait_for("the active run to end", lambda: not handle.status()["active"], timeout=30)
        time.sleep(3)
        assert handle.status()["fired"] == paused_at
        runs = spans(log)
        for a, b in itertools.pairwise(runs):
            assert b["start"] >= a["end"] - 0.05, "two runs overlapped (max_concurrency=1)"
        print(f"3 runs fired {fired_after_s:.2f} s after the schedule was created",
              [(round(r["start"] - created, 2), round(r["end"] - created, 2)) for r in runs])
        assert fired_after_s <= 8, f"3 runs took {fired_after_s:.1f} s to fire, not <= 8 s"
    finally:
        handle.delete()
        ray.kill(ray.get_actor(SCHEDULER_NAME, namespace=SCHEDULER_NAMESPACE))


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
