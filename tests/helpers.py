"""Small helpers shared by test modules (one home: add here instead of copying into a module)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from raymlp._util import free_ports

__all__ = ["ENGINE_NOISE", "free_port", "free_ports", "infer_body", "kill_nodes", "wait_for"]

# Strings that only the engines' log lines and warnings contain (issue 8, acceptance 7): the
# console tests check that none reaches a user's terminal or notebook.
ENGINE_NOISE = ("TrainingReport(", "authentication", "Downloading artifacts", "Warning", "INFO")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    return free_ports(1)[0]


def wait_for(what: str, fetch: Callable[[], Any], timeout: float = 60, period: float = 0.25) -> Any:
    """Poll ``fetch`` until it returns a truthy value and return it; fail the test naming
    ``what`` (and the last value seen) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fetch()
        if last:
            return last
        time.sleep(period)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def infer_body(x, name: str = "input-0", datatype: str = "FP32", **extra: Any) -> dict:
    """An Open Inference Protocol v2 request body with one tensor holding numpy array ``x``
    (``extra`` adds top-level fields such as ``id``)."""
    return {**extra, "inputs": [{"name": name, "shape": list(x.shape), "datatype": datatype,
                                 "data": x.reshape(-1).tolist()}]}


def drop_services(*names: str) -> None:
    """Delete inference services at the end of a module without waiting for their replicas to
    drain (~30 s each); ``Service.delete()`` itself, which waits, is tested on its own."""
    from ray import serve as ray_serve

    from raymlp import serve

    for name in names or serve.list_services():
        if name in serve.list_services():
            ray_serve.delete(name, _blocking=False)


def kill_nodes(*nodes) -> None:
    """Kill Ray nodes' processes at once: those whose command line names a node's temp dir, and
    their children (Ray's workers, whose titles no longer name it); then remove the temp dirs.
    Never ``ray stop``, which would end every Ray on the machine. The graceful stop
    (``raymlp._local.stop``, tested through ``raymlp down``) waits ~12 s for each node in
    turn; a test's throwaway head needs none."""
    import shutil
    import signal

    import psutil

    from raymlp import _local

    procs = _local._tree([p for node in nodes for p in _local._processes(node.temp_dir)])
    _local.signal_all(procs, signal.SIGKILL)
    psutil.wait_procs(procs, timeout=10)
    for node in nodes:
        shutil.rmtree(node.temp_dir, ignore_errors=True)
