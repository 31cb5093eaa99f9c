"""raymlp.init(): idempotent in-process, and a clear error within seconds for a bad address."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import raymlp


def test_init_is_idempotent(ray_session):
    assert raymlp.init() is ray_session
    assert ray_session.local and ray_session.resources["CPU"] == 4
    assert "raymlp" in ray_session._repr_html_()


def test_unreachable_ray_address_fails_within_seconds():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, so nothing listens there
    code = f"import raymlp; raymlp.init('127.0.0.1:{port}')"
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert time.monotonic() - started < 30
    assert out.returncode != 0
    assert f"ray_address='127.0.0.1:{port}'" in out.stderr
    assert "ConfigError" in out.stderr
