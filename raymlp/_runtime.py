"""Connecting to Ray: one idempotent :func:`init` for scripts, Ray jobs and Jupyter kernels."""

from __future__ import annotations

import dataclasses
import html
import os
import threading

from raymlp import _config, _console
from raymlp.errors import ConfigError

__all__ = ["RuntimeInfo", "init", "shutdown"]

_lock = threading.Lock()

# Ray Train settings raymlp applies unless the user set them (the driver's environment is what Ray
# Train reads and propagates to its controller and workers). Measured on a 2-core machine, see
# benchmarks/train_overhead.py.
#
# The controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (Ray: 2 s) and a
# worker's result queue holds one report: each ray.train.report waits for the poll that takes
# the previous one, so any epoch shorter than the interval is stretched to it, and a finished
# job is noticed up to two intervals late.
_TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
# Only on a local instance that raymlp starts: nothing ever drains its one node, so the
# preemption watcher (one more actor process per job) has nothing to watch.
_LOCAL_TRAIN_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


@dataclasses.dataclass(frozen=True)
class RuntimeInfo:
    """What :func:`init` connected to.

    Attributes:
        address: the Ray cluster's GCS address.
        local: True when raymlp started the Ray instance itself.
        resources: the cluster's total resources at connection time.
        tracking_uri: the MLflow tracking URI in use.
    """

    address: str
    local: bool
    resources: dict
    tracking_uri: str

    def _repr_html_(self) -> str:  # Jupyter
        cpus = self.resources.get("CPU", 0)
        gpus = self.resources.get("GPU", 0)
        kind = "local" if self.local else "remote"
        return (
            f"<b>raymlp</b> on a {kind} Ray cluster <code>{html.escape(self.address)}</code>: "
            f"{cpus:g} CPUs, {gpus:g} GPUs; tracking <code>{html.escape(self.tracking_uri)}</code>"
        )


_info: RuntimeInfo | None = None
_set_address = [False]  # whether init() set RAY_ADDRESS (shutdown() then removes it)


def init(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
         dashboard: bool = True, verbose: bool | None = None,
         token: str | None = None) -> RuntimeInfo:
    """Connect to Ray, starting a local instance when no cluster address is configured.

    The address comes from ``address``, then ``RAYMLP_RAY_ADDRESS`` / ``RAY_ADDRESS``. Inside a
    Ray job the job's cluster is used. Calling it again returns the same connection.

    Args:
        address: a Ray cluster address (``"auto"``, ``"host:6379"`` or ``"ray://host:10001"``).
        num_cpus: CPUs of a local instance (default: all of this machine's).
        num_gpus: GPUs of a local instance (default: those Ray detects).
        dashboard: start Ray's dashboard with a local instance (Ray's state API, job
            submission and Ray Train's controller monitoring need it).
        verbose: True lets the engines' (Ray, MLflow) INFO lines and warnings through, as
            ``RAYMLP_LOG_LEVEL=INFO`` does; by default only their errors reach the console.
        token: the cluster's authentication token (Ray 2.60 heads have token authentication
            on by default); default ``RAYMLP_RAY_TOKEN`` / ``RAY_AUTH_TOKEN``, else Ray's token
            file.

    Returns:
        RuntimeInfo: the address, whether it is local, and the cluster's resources.

    Raises:
        ConfigError: the address cannot be reached, or refuses this process's token.
    """
    global _info
    import ray

    with _lock:
        if verbose is not None:
            _config.configure(log_level="INFO" if verbose else "ERROR")
        # Before Ray starts: the variables it sets must reach Ray's processes.
        _console.quiet_ray()
        if ray.is_initialized() and _info is not None:
            return _info
        cfg = _config.get()
        address = address or cfg.ray_address
        if not ray.is_initialized():
            # Ray workers started by this driver see the same raymlp configuration.
            os.environ.update(cfg.env())
            for key, value in {**_TRAIN_ENV, **({} if address else _LOCAL_TRAIN_ENV)}.items():
                os.environ.setdefault(key, value)
            kwargs: dict = {"ignore_reinit_error": True,
                            "logging_level": _console.engine_log_level(),
                            "log_to_driver": True}
            if address:
                _probe(address)
                _use_token(token or cfg.ray_token)
                try:
                    context = ray.init(address=address, **kwargs)
                except ray.exceptions.AuthenticationError as exc:
                    raise ConfigError(
                        f"the Ray cluster at ray_address={address!r} refused the connection: it "
                        "has token authentication on; pass raymlp.init(address, token=...) or set "
                        "RAYMLP_RAY_TOKEN (`ray get-auth-token` on the head prints it)") from exc
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    # A token-authenticated cluster refuses a client without the token this way.
                    hint = "" if (token or cfg.ray_token) else (
                        "; if the cluster has token authentication on (Ray 2.60's default), pass "
                        "raymlp.init(address, token=...) or set RAYMLP_RAY_TOKEN")
                    raise ConfigError(
                        f"cannot connect to the Ray cluster at ray_address={address!r}: "
                        f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}{hint}"
                    ) from exc
            else:
                context = ray.init(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus,
                                   include_dashboard=dashboard, **kwargs)
            _console.remember_dashboard(getattr(context, "dashboard_url", None))
        ctx = ray.get_runtime_context()
        # Ray Train's controller finds the cluster through RAY_ADDRESS (its placement-group
        # cleaner otherwise trips over another Ray instance on the machine): set once here,
        # under the lock, for the life of the connection, never per job.
        if not os.environ.get("RAY_ADDRESS"):
            os.environ["RAY_ADDRESS"] = ctx.gcs_address
            _set_address[0] = True
        from raymlp import _ray_compat  # here: `import raymlp` stays free of Ray's internals

        _ray_compat.propagate_to_train("RAY_ADDRESS")
        _info = RuntimeInfo(
            address=ctx.gcs_address,
            local=not address,
            resources={k: float(v) for k, v in ray.cluster_resources().items()
                       if not k.startswith("node:") and not k.startswith("accelerator_type")},
            tracking_uri=cfg.tracking_uri,
        )
        return _info


def _use_token(token: str | None) -> None:
    """Have Ray present ``token`` to the cluster (it reads the token from the environment)."""
    if token:
        from raymlp import _ray_compat

        _ray_compat.use_auth_token(token)


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail within seconds on an address nobody listens at (Ray itself retries for minutes)."""
    import socket

    target = address.removeprefix("ray://")
    if address == "auto" or ":" not in target:
        return
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at ray_address={address!r}: {exc}; check "
            "RAYMLP_RAY_ADDRESS / RAY_ADDRESS (host:port of the head's GCS, or ray://host:10001)"
        ) from exc


def shutdown() -> None:
    """Disconnect from Ray (and stop a local instance that :func:`init` started)."""
    global _info
    import ray

    with _lock:
        _info = None
        if _set_address[0]:
            os.environ.pop("RAY_ADDRESS", None)
            _set_address[0] = False
        if ray.is_initialized():
            ray.shutdown()
