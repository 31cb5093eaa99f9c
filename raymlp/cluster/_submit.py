"""Ray job submission to any Ray cluster, through Ray's Job Submission SDK.

The SDK talks to the head's dashboard (``http://HEAD:8265``). These helpers add what the
command line needs on top: the dashboard URL from the cluster's address (``--address`` means
the Ray cluster everywhere in raymlp), a reachability check that fails within seconds instead of
hanging on an unroutable address, log streaming until the job ends, and the job's terminal
status.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

from raymlp.errors import ConfigError, JobConnectionError

__all__ = [
    "DASHBOARD_PORT",
    "TERMINAL_STATES",
    "connect",
    "dashboard_url",
    "follow_job",
    "is_local_uri",
    "local_store_warning",
    "submit_job",
]

TERMINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")
#: The port of a Ray head's dashboard and job API unless ``ray start --dashboard-port`` says otherwise.
DASHBOARD_PORT = 8265
_CONNECT_TIMEOUT_S = 5.0


def dashboard_url(address: str | None = None, *, dashboard: str | None = None) -> str:
    """The job-submission (dashboard) URL of a Ray cluster.

    Args:
        address: the Ray cluster: a GCS address ``HOST:PORT``, ``ray://HOST:PORT``, or ``auto``;
            None: ``RAYMLP_RAY_ADDRESS`` / ``RAY_ADDRESS``, else the managed local head
            (``raymlp up``). An ``http(s)://`` value is taken as the dashboard URL itself.
        dashboard: the dashboard URL, given explicitly; it wins over ``address``.

    Returns:
        ``dashboard`` when given; the managed local head's dashboard when ``address`` is it (or
        is not given, or is ``auto``); else ``http://HOST:8265`` on the address's host.

    Raises:
        ConfigError: no cluster is given or configured and no local head is running.

    Example:
        >>> dashboard_url("10.0.0.5:6379")
        'http://10.0.0.5:8265'
    """
    from raymlp import _config, _local

    if dashboard:
        return _normalize(dashboard)
    address = address or _config.get().ray_address
    if address and "://" in address and urlsplit(address).scheme in ("http", "https"):
        return _normalize(address)
    head = _local.current()
    if not address or address == "auto" or (head is not None and _host_port(address) == head.address):
        if head is not None:
            return head.dashboard_url
        raise ConfigError(
            "no Ray cluster: pass --address HOST:PORT (the cluster's GCS address) or --dashboard "
            "http://HOST:8265, set RAYMLP_RAY_ADDRESS, or start a local cluster with `raymlp up`"
        )
    host = urlsplit(f"//{_host_port(address)}").hostname
    if not host:
        raise ConfigError(f"--address must be the Ray cluster's HOST:PORT or ray://HOST:PORT, got {address!r}")
    return f"http://{host}:{DASHBOARD_PORT}" if ":" not in host else f"http://[{host}]:{DASHBOARD_PORT}"


def _host_port(address: str) -> str:
    return address.split("://", 1)[-1].rstrip("/")


def _normalize(address: str) -> str:
    if not isinstance(address, str) or not address.strip():
        raise ConfigError(f"a Ray dashboard address is needed (e.g. http://127.0.0.1:8265), got {address!r}")
    address = address.strip().rstrip("/")
    if "://" not in address:
        address = f"http://{address}"
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"the job submission address must be the head's dashboard URL, http(s)://HOST:PORT, got {address!r}"
        )
    return address


def connect(address: str, *, timeout_s: float = _CONNECT_TIMEOUT_S, token: str | None = None):
    """A ``JobSubmissionClient`` for the job API at ``address``, or a clear error within ``timeout_s``.

    Ray 2.60 heads have token authentication on by default: the token is sent as a bearer
    header. A head without a usable token, one nobody answers at, and one running another Ray
    version each give a one-line :class:`JobConnectionError` naming the address and the fix.

    Args:
        address: the dashboard URL, ``http://HOST:8265`` (the scheme may be left out); see
            :func:`dashboard_url` for finding it from the cluster's address.
        timeout_s: seconds to wait for the TCP connection and each check.
        token: the head's authentication token; default ``RAYMLP_RAY_TOKEN`` /
            ``RAY_AUTH_TOKEN``, else Ray's token file (``RAY_AUTH_TOKEN_PATH``,
            ``~/.ray/auth_token``).

    Raises:
        JobConnectionError: nothing answers there, it is not a Ray job API, it refuses the
            token (or wants one), or it runs another Ray version than this client.
    """
    from raymlp import _config

    url = _normalize(address)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        # The SDK's first request has no timeout; probe first so a black-holed address fails fast.
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise JobConnectionError(
            f"cannot reach the Ray head's job API at {url} ({exc.strerror or exc}); "
            "is the dashboard running there (ray start --head --include-dashboard=true)? "
            "Check --address / --dashboard"
        ) from exc
    token = token or _config.get().ray_token or _config.token_file()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    _check_head(url, headers, timeout_s=timeout_s, token_given=bool(token))
    from ray.exceptions import AuthenticationError

    try:
        return _client(url, headers)
    except AuthenticationError as exc:  # the checks above make this rare: say it in one line
        raise JobConnectionError(f"the Ray head at {url} refused the token: {_first_line(exc)}; "
                                 f"{_TOKEN_FIX}") from None
    except (ConnectionError, RuntimeError) as exc:
        raise JobConnectionError(f"{url} did not answer as a Ray job API: {exc}") from exc


def _client(url: str, headers: Mapping[str, str]):
    """Ray's job SDK at ``url``, even in a process that runs Ray itself.

    The SDK replaces the address it is given with ``RAY_API_SERVER_ADDRESS`` or ``RAY_ADDRESS``
    from the environment, and ``raymlp.init()`` sets ``RAY_ADDRESS`` (Ray Train needs it): a
    notebook that trained locally would submit to its own cluster. They are hidden while the
    client is made (it keeps its address).
    """
    import os

    from ray.job_submission import JobSubmissionClient

    hidden = {k: os.environ.pop(k) for k in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
              if k in os.environ}
    try:
        return JobSubmissionClient(url, headers=dict(headers) or None)
    finally:
        os.environ.update(hidden)


_TOKEN_FIX = ("pass --token TOKEN or set RAYMLP_RAY_TOKEN (or RAY_AUTH_TOKEN); `ray get-auth-token` "
              "on the head prints it")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _check_head(url: str, headers: Mapping[str, str], *, timeout_s: float, token_given: bool) -> None:
    """One-line errors for a head that wants a token, refuses ours, or runs another Ray."""
    import json
    import urllib.error
    import urllib.request

    import ray

    def get(path: str, send: Mapping[str, str]) -> tuple[int, str]:
        req = urllib.request.Request(url + path, headers=dict(send))
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except (OSError, ValueError) as exc:
            raise JobConnectionError(f"{url} did not answer as a Ray job API ({exc}); check "
                                     "--address / --dashboard") from None

    status, body = get("/api/version", headers)
    if status == 401:
        raise JobConnectionError(f"the Ray head at {url} has token authentication on and no token "
                                 f"was given: {_TOKEN_FIX}")
    if status == 403:
        raise JobConnectionError(f"the Ray head at {url} refused the token given "
                                 f"({'--token / ' if token_given else ''}RAYMLP_RAY_TOKEN / "
                                 f"RAY_AUTH_TOKEN / the token file): {_TOKEN_FIX}")
    if status == 404:
        raise JobConnectionError(f"{url} is not a Ray job API (GET /api/version: 404); point "
                                 "--dashboard at the head's dashboard port (8265 by default)")
    if status != 200:
        raise JobConnectionError(f"{url} did not answer as a Ray job API (GET /api/version: "
                                 f"HTTP {status}: {body.strip()[:200]})")
    try:
        theirs = str(json.loads(body)["ray_version"])
    except (ValueError, KeyError, TypeError):
        raise JobConnectionError(f"{url} did not answer as a Ray job API (GET /api/version: "
                                 f"{body.strip()[:200]!r})") from None
    if theirs.split(".")[:2] != ray.__version__.split(".")[:2]:
        raise JobConnectionError(
            f"the Ray head at {url} runs Ray {theirs}, this client Ray {ray.__version__}: jobs "
            f"need the same Ray version on both sides; pip install 'ray[default]=={theirs}' "
            "here, or use a head of this version")


def submit_job(client: Any, entrypoint: str | Sequence[str], *, working_dir: str | None = None,
               pip: Sequence[str] = (), env_vars: Mapping[str, str] | None = None,
               submission_id: str | None = None, runtime: str = "ship",
               extras: Sequence[str] | None = None) -> str:
    """Submit ``entrypoint`` with a runtime environment; returns the submission id.

    The job carries raymlp (``runtime="ship"``: the package and its requirements, see
    :mod:`raymlp.cluster._ship`) unless the cluster's image has it (``runtime="image"``), and
    the tracking and storage settings given here explicitly (``RAYMLP_TRACKING_URI``,
    ``RAYMLP_STORAGE_ROOT``, ...), which ``env_vars`` may override.

    Args:
        client: a dashboard address (``http://HEAD:8265``) or a client from :func:`connect`.
        entrypoint: the command, a string or an argv list.
        working_dir: a local directory (uploaded) or a remote URI.
        pip: further pip requirements installed for the job.
        env_vars: environment variables of the job.
        submission_id: a job id of your choosing.
        runtime: ``"ship"`` or ``"image"``.
        extras: raymlp extras the job uses (default ``torch``, plus ``s3`` for an S3 storage
            root).

    Example:
        >>> job_id = submit_job("http://127.0.0.1:8265", ["python", "train.py"],
        ...                     working_dir=".")                      # doctest: +SKIP
    """
    import shlex

    if isinstance(client, str):
        client = connect(client)

    if not isinstance(entrypoint, str):
        entrypoint = shlex.join(entrypoint)
    if not entrypoint.strip():
        raise ConfigError("the job entrypoint is empty; give the command after '--'")
    from raymlp import _config
    from raymlp.cluster import _ship

    runtime_env: dict[str, Any] = {}
    if working_dir:
        runtime_env["working_dir"] = working_dir
    if pip:
        runtime_env["pip"] = list(pip)
    env = {**_config.explicit_env(), **dict(env_vars or {})}
    if env:
        runtime_env["env_vars"] = env
    storage = env.get("RAYMLP_STORAGE_ROOT")
    runtime_env = _ship.runtime_env(runtime_env, runtime=runtime,
                                    extras=_ship.extras_for(storage, extras))
    return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env or None, submission_id=submission_id)


def is_local_uri(uri: str | None) -> bool:
    """Whether a tracking URI or storage root names a place on one machine's disk."""
    if not uri:
        return True
    scheme = urlsplit(uri).scheme
    return scheme in ("", "file", "sqlite")


def local_store_warning(env_vars: Mapping[str, str]) -> str | None:
    """The warning for a job whose run or checkpoints would stay on the head's disk."""
    local = [name for name in ("RAYMLP_TRACKING_URI", "RAYMLP_STORAGE_ROOT")
             if is_local_uri(env_vars.get(name))]
    if not local:
        return None
    return ("the job's " + " and ".join(local) + " " + ("is" if len(local) == 1 else "are")
            + " not set here or local to a machine (a file/sqlite path): unless the head's "
            "environment sets them, the run, checkpoints and model stay on the head's disk and go "
            "with it; set RAYMLP_TRACKING_URI=http://MLFLOW:5000 and "
            "RAYMLP_STORAGE_ROOT=s3://BUCKET/PATH (here, or with --env)")


def follow_job(client: Any, job_id: str, *, out: TextIO | None = None, timeout_s: float | None = None,
               poll_s: float = 0.5, on_line: Callable[[str], None] | None = None) -> str:
    """Stream a job's logs to ``out`` until it ends; returns its terminal status name.

    Raises:
        raymlp.errors.TimeoutError: the job did not end within ``timeout_s`` seconds (it is left
            running; ``last_status`` is its status then).
    """
    from raymlp._util import poll

    out = out or sys.stdout
    deadline = None if timeout_s is None else time.monotonic() + timeout_s

    async def stream() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()
            if on_line:
                on_line(chunk)

    async def run() -> None:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait_for(stream(), remaining)
        except asyncio.TimeoutError:
            pass

    asyncio.run(run())

    # The log stream closes when the job ends; the status may lag it by a moment.
    def status() -> str:
        return str(client.get_job_status(job_id).value)

    def ended() -> str | None:
        now = status()
        return now if now in TERMINAL_STATES else None

    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    return poll(ended, timeout_s=remaining, what=f"job {job_id} to finish (it is still running)",
                interval_s=poll_s, max_interval_s=poll_s, status=status)


def log_tail(client: Any, job_id: str, lines: int = 20) -> str:
    """The last ``lines`` lines of a job's logs."""
    text = client.get_job_logs(job_id) or ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
