"""A managed local Ray head for work that outlives one command (services, schedules).

``raymlp up`` (or the first command that needs a lasting cluster and finds none) starts a Ray
head on this machine with its own ports and temp dir, records it in ``<raymlp home>/head.json``,
and reports it; later commands reach it there; ``raymlp down`` stops exactly its processes
(never another Ray instance on the machine, as ``ray stop`` would).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from raymlp import _config
from raymlp._util import free_ports
from raymlp.errors import ConfigError, TimeoutError

__all__ = ["Head", "current", "resolve_address", "start", "stop"]

_STATE = "head.json"


@dataclasses.dataclass(frozen=True)
class Head:
    """A Ray head started by raymlp.

    Attributes:
        address: the GCS address (``host:port``), what ``--address`` and ``raymlp.init`` take.
        dashboard_url: the dashboard and job-submission URL.
        temp_dir: Ray's temp dir for this head (its processes are found by it).
    """

    address: str
    dashboard_url: str
    temp_dir: str

    def alive(self) -> bool:
        host, _, port = self.address.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return True
        except OSError:
            return False


def _state_file() -> Path:
    return Path(_config.get().home) / _STATE


def current() -> Head | None:
    """The head recorded for this raymlp home, when it is still up."""
    path = _state_file()
    if not path.is_file():
        return None
    try:
        head = Head(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None
    return head if head.alive() else None


def start(*, num_cpus: int | None = None, num_gpus: int | None = None,
          temp_dir: str | None = None, env: dict[str, str] | None = None,
          timeout_s: float = 180.0, record: bool = True) -> Head:
    """Start a Ray head on this machine on free ports; return it once its job API answers.

    Args:
        num_cpus / num_gpus: the head's resources (default: what Ray detects).
        temp_dir: Ray's temp dir (default: a short new one under the system temp dir: Ray's
            unix sockets must stay within 107 characters).
        env: extra environment for the head's processes.
        record: remember it in the raymlp home, for later commands and ``raymlp down``.
    """
    temp_dir = temp_dir or tempfile.mkdtemp(prefix="rmlp-", dir="/tmp")
    (gcs, dash, agent_http, agent_grpc, metrics, client, runtime_env, node_mgr,
     obj_mgr) = ports = free_ports(9)
    low = max(free_ports(1)[0], 20000)
    while any(low <= p <= low + 200 for p in ports):  # Ray refuses a port inside the range
        low = max(free_ports(1)[0], 20000)
    ray = str(Path(sys.executable).with_name("ray"))
    cmd = [
        ray, "start", "--head", f"--temp-dir={temp_dir}", f"--port={gcs}",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}", f"--ray-client-server-port={client}",
        f"--runtime-env-agent-port={runtime_env}", f"--node-manager-port={node_mgr}",
        f"--object-manager-port={obj_mgr}", f"--min-worker-port={low}",
        f"--max-worker-port={low + 200}", "--disable-usage-stats",
    ]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    if num_gpus is not None:
        cmd.append(f"--num-gpus={num_gpus}")
    full_env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAYMLP_RAY_ADDRESS")}
    # Token authentication is for heads others can reach; this one listens on this machine only.
    full_env.setdefault("RAY_AUTH_MODE", "disabled")
    # Job entrypoints run `python` from the head's PATH: make it this interpreter, with Ray.
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env.get('PATH', '')}"
    full_env.update(env or {})
    head = Head(address=f"127.0.0.1:{gcs}", dashboard_url=f"http://127.0.0.1:{dash}",
                temp_dir=temp_dir)
    deadline = time.monotonic() + timeout_s
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=full_env, check=False)
        if out.returncode == 0:
            _wait_for_jobs_api(head, max(deadline - time.monotonic(), 1.0))
    except (subprocess.TimeoutExpired, TimeoutError) as exc:  # leave no half-started head
        stop(head)
        raise ConfigError(f"the local Ray head at {head.address} did not come up (its job API "
                          f"at {head.dashboard_url} answering) within {timeout_s:g} s; what had "
                          "started was stopped. Try again on a less busy machine, or give "
                          "--address of a running cluster") from exc
    if out.returncode != 0:
        stop(head)
        raise ConfigError(f"starting a local Ray head failed (ray start exited {out.returncode}):"
                          f"\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    if record:
        path = _state_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dataclasses.asdict(head)))
    return head


def _wait_for_jobs_api(head: Head, timeout_s: float) -> None:
    import urllib.request

    from raymlp._util import poll

    def up():
        try:
            with urllib.request.urlopen(f"{head.dashboard_url}/api/version", timeout=2):
                return True
        except OSError:
            return None

    poll(up, timeout_s=timeout_s, what=f"the Ray head's job API at {head.dashboard_url}",
         interval_s=0.5)


def _processes(temp_dir: str) -> list:
    import psutil

    out = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in proc.info["cmdline"] or ()):
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def _tree(procs: list) -> list:
    """``procs`` and all their descendants."""
    import psutil

    found = {p.pid: p for p in procs}
    for p in procs:
        try:
            found.update((c.pid, c) for c in p.children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def signal_all(procs, sig: int) -> None:
    """Send ``sig`` to each process that is still there."""
    import psutil

    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def stop(head: Head | None = None) -> Head | None:
    """Stop ``head`` (default: the recorded one): exactly its processes; returns what it stopped."""
    import shutil

    import psutil

    path = _state_file()
    if head is None:
        if not path.is_file():
            return None
        try:
            head = Head(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            path.unlink(missing_ok=True)
            return None
    # Ray's workers rename themselves (``ray::ServeReplica…``), so the temp dir is not in their
    # command line: they are found as descendants of the head's processes. A worker that
    # outlived its raylet for a moment could start a child (the Serve proxy restarts HAProxy),
    # so the scan repeats until nothing of the head is left.
    deadline = time.monotonic() + 30
    while True:
        procs = _tree(_processes(head.temp_dir))
        if not procs or time.monotonic() > deadline:
            break
        signal_all(procs, signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=10)
        signal_all(alive, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=5)
    shutil.rmtree(head.temp_dir, ignore_errors=True)
    if path.is_file():
        try:
            if json.loads(path.read_text()).get("temp_dir") == head.temp_dir:
                path.unlink()
        except ValueError:
            path.unlink()
    return head


def resolve_address(address: str | None, *, start_if_missing: bool = True,
                    announce=print) -> str:
    """The Ray cluster a command that outlives itself works on.

    ``address`` (``--address``), then ``RAYMLP_RAY_ADDRESS`` / ``RAY_ADDRESS``, then the
    managed local head of this raymlp home; with none of those, a new managed head is started
    and announced (``start_if_missing``), or a :class:`ConfigError` says how to get one.
    """
    address = address or _config.get().ray_address
    if address:
        return address
    head = current()
    if head is not None:
        return head.address
    if not start_if_missing:
        raise ConfigError("no Ray cluster: give --address (or RAYMLP_RAY_ADDRESS), or start a "
                          "local one with `raymlp up`")
    announce("raymlp: starting a local Ray head for work that outlives this command ...")
    head = start()
    announce(f"raymlp: local Ray head at {head.address} (dashboard {head.dashboard_url}); "
             "stop it with `raymlp down`")
    return head.address

