"""Ray job submission to any Ray head, through Ray's Job Submission SDK.

The SDK talks to the head's dashboard (``http://HEAD:8265``). These helpers add what the
command line needs on top: a reachability check that fails within seconds instead of hanging
on an unroutable address, log streaming until the job ends, and the job's terminal status.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from typing import Any, Callable, Mapping, Sequence, TextIO
from urllib.parse import urlsplit

from raymlp.errors import ConfigError, JobError

__all__ = ["JobConnectionError", "connect", "submit_job", "follow_job", "TERMINAL_STATES"]

TERMINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")
_CONNECT_TIMEOUT_S = 5.0


class JobConnectionError(ConfigError, ConnectionError):
    """The Ray head's job API cannot be reached at the given address."""


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


def connect(address: str, *, timeout: float = _CONNECT_TIMEOUT_S):
    """A ``JobSubmissionClient`` for the head at ``address``, or a clear error within ``timeout``.

    Args:
        address: the dashboard URL, ``http://HOST:8265`` (the scheme may be left out).
        timeout: seconds to wait for the TCP connection.

    Raises:
        JobConnectionError: nothing answers there, or it is not a Ray job API.
    """
    url = _normalize(address)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        # The SDK's first request has no timeout; probe first so a black-holed address fails fast.
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise JobConnectionError(
            f"cannot reach the Ray head's job API at {url} ({exc.strerror or exc}); "
            "is the dashboard running there (ray start --head --include-dashboard=true)?"
        ) from exc
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(url)
    except (ConnectionError, RuntimeError) as exc:
        raise JobConnectionError(f"{url} did not answer as a Ray job API: {exc}") from exc


def submit_job(client: Any, entrypoint: str | Sequence[str], *, working_dir: str | None = None,
               pip: Sequence[str] = (), env_vars: Mapping[str, str] | None = None,
               submission_id: str | None = None) -> str:
    """Submit ``entrypoint`` with a runtime environment; returns the submission id.

    Args:
        client: a dashboard address (``http://HEAD:8265``) or a client from :func:`connect`.
        entrypoint: the command, a string or an argv list.
        working_dir: a local directory (uploaded) or a remote URI.
        pip: pip requirements installed for the job.
        env_vars: environment variables of the job.
        submission_id: a job id of your choosing.

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
    runtime_env: dict[str, Any] = {}
    if working_dir:
        runtime_env["working_dir"] = working_dir
    if pip:
        runtime_env["pip"] = list(pip)
    if env_vars:
        runtime_env["env_vars"] = dict(env_vars)
    return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env or None, submission_id=submission_id)


def follow_job(client: Any, job_id: str, *, out: TextIO | None = None, timeout: float | None = None,
               poll_s: float = 0.5, on_line: Callable[[str], None] | None = None) -> str:
    """Stream a job's logs to ``out`` until it ends; returns its terminal status name.

    Raises:
        JobError: the job did not end within ``timeout`` seconds (it is left running).
    """
    out = out or sys.stdout
    deadline = None if timeout is None else time.monotonic() + timeout

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
    while True:
        status = str(client.get_job_status(job_id).value)
        if status in TERMINAL_STATES:
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise JobError(f"job {job_id} did not finish within {timeout} s (status {status}); it is still running")
        time.sleep(poll_s)


def log_tail(client: Any, job_id: str, lines: int = 20) -> str:
    """The last ``lines`` lines of a job's logs."""
    text = client.get_job_logs(job_id) or ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
