"""Ray heads and extra nodes on this machine for the cluster tests, from any environment.

Each node gets free ports and its own temp dir, and is stopped by ending exactly the processes
that carry that temp dir and their children; never ``ray stop``, which would end every Ray on
the machine. Unlike ``raymlp._local.start``, these may run another Python environment (the
bare stand-in for a stock Ray image), take a token, and join a second node to the head.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from raymlp import _local
from raymlp._util import free_ports
from tests.helpers import kill_nodes, wait_for

Node = _local.Head  # address, dashboard_url, temp_dir: what _local.stop needs


def _worker_port_range() -> tuple[int, int]:
    low = max(free_ports(1)[0], 20000)
    return low, low + 150


def _ports_args(head: bool) -> tuple[list[str], dict[str, int]]:
    names = ["node_mgr", "obj_mgr", "metrics", "agent_http", "agent_grpc", "runtime_env"]
    if head:
        names += ["gcs", "dashboard", "client"]
    ports = dict(zip(names, free_ports(len(names))))
    low, high = _worker_port_range()
    while any(low <= p <= high for p in ports.values()):
        low, high = _worker_port_range()
    args = [
        f"--node-manager-port={ports['node_mgr']}", f"--object-manager-port={ports['obj_mgr']}",
        f"--metrics-export-port={ports['metrics']}",
        f"--dashboard-agent-listen-port={ports['agent_http']}",
        f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
        f"--runtime-env-agent-port={ports['runtime_env']}",
        f"--min-worker-port={low}", f"--max-worker-port={high}", "--disable-usage-stats",
    ]
    if head:
        args += [f"--port={ports['gcs']}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                 f"--dashboard-port={ports['dashboard']}", f"--ray-client-server-port={ports['client']}"]
    return args, ports


def _env(bin_dir: Path, env: dict[str, str] | None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "RAYMLP_", "VIRTUAL_ENV", "PYTHON"))}
    # Job entrypoints run `python` from the node's PATH: this environment's.
    out["PATH"] = f"{bin_dir}{os.pathsep}{out.get('PATH', '')}"
    out.update(env or {})
    return out


def start(bin_dir: Path, *, num_cpus: int, resources: dict[str, float] | None = None,
          head: Node | None = None, env: dict[str, str] | None = None,
          timeout_s: float = 120, tries: int = 2, wait: bool = True) -> Node:
    """Start a head (``head=None``) or a node joining ``head``, from ``bin_dir``'s ``ray``.

    A node that times out while starting (Ray gives up when the machine is too busy) is
    stopped and started again, ``tries`` times in all. A head is returned once its job API
    answers (:func:`wait_ready`), or at once with ``wait=False``.
    """
    for attempt in range(tries):
        try:
            node = _start(bin_dir, num_cpus=num_cpus, resources=resources, head=head, env=env,
                          timeout_s=timeout_s)
            break
        except RuntimeError:
            if attempt == tries - 1:
                raise
    if head is None and wait:
        wait_ready(node, timeout_s=timeout_s)
    return node


def wait_ready(head: Node, *, timeout_s: float) -> None:
    """Wait for the head's job API; a head that never answers is stopped."""
    try:
        wait_for(f"the job API at {head.dashboard_url}", lambda: _healthy(head.dashboard_url),
                 timeout=timeout_s, period=0.5)
    except BaseException:
        kill_nodes(head)
        raise


def _start(bin_dir: Path, *, num_cpus: int, resources: dict[str, float] | None,
           head: Node | None, env: dict[str, str] | None, timeout_s: float) -> Node:
    temp_dir = tempfile.mkdtemp(prefix="rmlp-n-", dir="/tmp")
    args, ports = _ports_args(head is None)
    cmd = [str(bin_dir / "ray"), "start", f"--temp-dir={temp_dir}", f"--num-cpus={num_cpus}",
           "--num-gpus=0", "--node-ip-address=127.0.0.1", *args]
    cmd += ["--head"] if head is None else [f"--address={head.address}"]
    if resources:
        cmd.append(f"--resources={json.dumps(resources)}")
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout_s,
                         env=_env(bin_dir, env))
    node = Node(address=head.address if head else f"127.0.0.1:{ports['gcs']}",
                dashboard_url=head.dashboard_url if head else f"http://127.0.0.1:{ports['dashboard']}",
                temp_dir=temp_dir)
    if out.returncode != 0:
        kill_nodes(node)
        raise RuntimeError(f"ray start failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return node


def _healthy(url: str) -> bool:
    try:  # a public path: it answers without the token
        with urllib.request.urlopen(f"{url}/api/gcs_healthz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False
