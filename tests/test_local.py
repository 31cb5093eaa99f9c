"""The managed local Ray head: `raymlp up` starts one that outlives the command, later commands
find it, `raymlp down` stops exactly its processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _raymlp(home, *args):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RAYMLP_") and k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["RAYMLP_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "raymlp.cli", *args], capture_output=True,
                          text=True, env=env, cwd=home, timeout=180)


def test_up_starts_a_head_that_later_commands_reach_and_down_stops_it(tmp_path):
    import psutil

    from raymlp import _local

    first = _raymlp(tmp_path, "up", "--num-cpus", "1", "--num-gpus", "0")
    assert first.returncode == 0, first.stderr
    address = first.stdout.strip()
    record = json.loads((tmp_path / "head.json").read_text())
    head = _local.Head(**record)
    try:
        assert head.address == address and head.alive()
        assert "stop it with `raymlp down`" in first.stderr
        # The head outlived the command; a second `up` finds it instead of starting another.
        second = _raymlp(tmp_path, "up")
        assert second.returncode == 0 and second.stdout.strip() == address
        assert "already up" in second.stderr
        # A program joins it as an ordinary Ray cluster.
        code = ("import ray; ray.init(address=%r, logging_level='ERROR'); "
                "print(int(ray.cluster_resources()['CPU']))" % address)
        joined = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=120, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        assert joined.stdout.strip().splitlines()[-1] == "1", joined.stderr
        assert _local._processes(head.temp_dir)
    finally:
        down = _raymlp(tmp_path, "down")
    assert down.returncode == 0 and f"stopped the local Ray head at {address}" in down.stdout
    assert not head.alive()
    assert _local._processes(head.temp_dir) == []
    assert not (tmp_path / "head.json").exists()
    assert psutil.pid_exists(os.getpid())  # and nothing else was touched
    again = _raymlp(tmp_path, "down")
    assert again.returncode == 0 and "no local Ray head to stop" in again.stdout
