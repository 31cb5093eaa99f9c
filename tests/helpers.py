"""Small helpers shared by test modules (one home: add here instead of copying into a module)."""

from __future__ import annotations

import socket
import time
from typing import Any, Callable

import pytest


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (held together while chosen)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


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
