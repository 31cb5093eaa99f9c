"""The inference service spec: frozen, keyword-only dataclasses that validate values only.

Building a spec imports no user code and touches no filesystem or cluster: a transformer given
as ``"module:Class"`` stays that string, a local model directory is not looked for. Those checks
run in :meth:`InferenceService.deploy`, still before any Ray work.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from raymlp import _spec as check
from raymlp.serve import _service
from raymlp.serve._model import check_model_uri
from raymlp.serve._transformer import check_value as check_transformer

EXPLAINERS = ("shap",)
# Besides the flavors raymlp.tracking logs and loads, "auto": the model's native flavor when a
# replica can call it directly, else pyfunc.
AUTO = "auto"

def check_percent(field: str, value: Any) -> float:
    """A traffic share: a number from 0 to 100."""
    return float(check.number(field, value, minimum=0, maximum=100))


def flavors() -> tuple[str, ...]:
    """The flavors a service loads its model with: ``auto`` and raymlp.tracking's flavors."""
    from raymlp import tracking

    return (AUTO, *tracking.FLAVORS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Autoscaling:
    """Replica autoscaling through Ray Serve's autoscaler.

    Attributes:
        min_replicas: the floor; 0 lets the service scale to zero when idle.
        max_replicas: the ceiling (>= min_replicas and >= 1).
        target_ongoing_requests: requests in flight per replica the autoscaler aims at.
        upscale_delay_s: how long load must stay high before replicas are added.
        downscale_delay_s: how long load must stay low before replicas are removed.

    Example:
        >>> Autoscaling(min_replicas=0, max_replicas=4, target_ongoing_requests=2)
    """

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 3.0
    downscale_delay_s: float = 30.0

    def __post_init__(self) -> None:
        check.integer("Autoscaling.min_replicas", self.min_replicas, minimum=0)
        check.integer("Autoscaling.max_replicas", self.max_replicas, minimum=1)
        if self.max_replicas < self.min_replicas:
            raise check.fail("Autoscaling.max_replicas", self.max_replicas,
                             f">= Autoscaling.min_replicas ({self.min_replicas})")
        check.number("Autoscaling.target_ongoing_requests", self.target_ongoing_requests,
                     minimum=0, strict=True)
        check.number("Autoscaling.upscale_delay_s", self.upscale_delay_s, minimum=0)
        check.number("Autoscaling.downscale_delay_s", self.downscale_delay_s, minimum=0)

    def serve_config(self) -> dict:
        """The ``autoscaling_config`` Ray Serve takes."""
        return {
            "min_replicas": self.min_replicas,
            "initial_replicas": max(self.min_replicas, 1),
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
            "downscale_to_zero_delay_s": self.downscale_delay_s,
            "metrics_interval_s": 1.0,
            "look_back_period_s": 2.0,
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class Batching:
    """Server-side request batching with Ray Serve's ``@serve.batch``.

    Attributes:
        max_batch_size: most requests predicted in one model call (>= 1).
        max_wait_s: longest a request waits for a batch to fill, in seconds (>= 0).

    Example:
        >>> Batching(max_batch_size=16, max_wait_s=0.002)
    """

    max_batch_size: int = 16
    max_wait_s: float = 0.002

    def __post_init__(self) -> None:
        check.integer("Batching.max_batch_size", self.max_batch_size, minimum=1)
        check.number("Batching.max_wait_s", self.max_wait_s, minimum=0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Resources:
    """Resources of one replica (fractional CPUs and GPUs allowed).

    Attributes:
        cpus: CPUs reserved per replica (> 0).
        gpus: GPUs per replica, e.g. 0.5 to pack two replicas on a GPU (>= 0).
        memory: memory reserved per replica in bytes, or None for no reservation.

    Example:
        >>> Resources(cpus=1.0, gpus=0.5, memory=2 * 1024**3)
    """

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int | None = None

    def __post_init__(self) -> None:
        check.number("Resources.cpus", self.cpus, minimum=0, strict=True)
        check.number("Resources.gpus", self.gpus, minimum=0)
        check.integer("Resources.memory", self.memory, minimum=1, optional=True)

    def actor_options(self) -> dict:
        """The ``ray_actor_options`` of a replica."""
        options: dict[str, Any] = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.memory is not None:
            options["memory"] = self.memory
        return options


@dataclasses.dataclass(frozen=True, kw_only=True)
class InferenceService:
    """An inference service: a model from the MLflow registry (or a path) behind the Open
    Inference Protocol v2 and KServe v1 REST APIs on Ray Serve.

    Attributes:
        name: the service name (DNS label: lowercase letters, digits, '-'); it is also the
            model name in the protocol paths and the route prefix (``/NAME``).
        model: the stable model URI (``models:/digits@champion``, ``models:/digits/3``,
            ``runs:/ID/model`` or a local MLflow model directory).
        canary_model: an optional second model URI that takes ``canary_percent`` of traffic.
        canary_percent: the canary's share of requests, 0-100.
        flavor: how replicas load the model: ``auto`` (the native flavor when a replica can
            call it directly, else pyfunc) or one of raymlp.tracking's flavors.
        replicas: the fixed replica count when ``autoscaling`` is None.
        autoscaling: autoscaling bounds and target, or None for a fixed count.
        batching: server-side batching, or None to predict each request alone.
        resources: CPUs, GPUs and memory per replica.
        max_ongoing_requests: requests one replica works on at once.
        max_request_bytes: larger request bodies get 413.
        auth_token: when set, requests must carry ``Authorization: Bearer <token>``.
        payload_log: log every inference request and its answer (JSON) to this sink: a file
            path (JSON lines, appended by every replica) or an ``http(s)://`` URL (batches
            POSTed as JSON arrays). Logging never delays or fails a request.
        explainer: ``"shap"`` adds ``POST /v1/models/NAME:explain``: per-feature SHAP
            attributions (``shap.Explainer`` over the model, with the input example logged
            with the model as background data). Needs ``pip install 'raymlp[explain]'``.
        transformer: user pre/post-processing run in every replica around the model: a
            :class:`raymlp.serve.Transformer` subclass (or any class or instance with a
            ``preprocess`` and/or ``postprocess`` method), or a reference
            ``"module:Class"`` / ``"path/file.py:Class"`` imported at deploy. Shipped to the
            replicas by value; see :class:`~raymlp.serve.Transformer`.
        access_log: write Ray Serve's per-request access log line in every replica (off by
            default: it costs ~4 % of a replica's time; the payload log and the Prometheus
            metrics record every request anyway).

    Example:
        >>> svc = InferenceService(name="digits", model="models:/digits@champion",
        ...                        autoscaling=Autoscaling(min_replicas=1, max_replicas=4))
        >>> service = svc.deploy()
        >>> service.canary("models:/digits/7", percent=10); service.promote()
    """

    name: str
    model: str
    canary_model: str | None = None
    canary_percent: float = 0.0
    flavor: str = AUTO
    replicas: int = 1
    autoscaling: Autoscaling | None = None
    batching: Batching | None = None
    resources: Resources = dataclasses.field(default_factory=Resources)
    max_ongoing_requests: int = 64
    max_request_bytes: int = 8 * 1024 * 1024
    auth_token: str | None = None
    payload_log: str | None = None
    explainer: str | None = None
    transformer: Any = None
    access_log: bool = False

    def __post_init__(self) -> None:
        check.name("InferenceService.name", self.name)
        check_model_uri("InferenceService.model", self.model)
        if self.canary_model is not None:
            check_model_uri("InferenceService.canary_model", self.canary_model)
        check_percent("InferenceService.canary_percent", self.canary_percent)
        if self.canary_model is None and self.canary_percent:
            raise check.fail("InferenceService.canary_percent", self.canary_percent,
                             "0 when no canary_model is given")
        check.choice("InferenceService.flavor", self.flavor, flavors())
        check.integer("InferenceService.replicas", self.replicas, minimum=1)
        check.instance("InferenceService.autoscaling", self.autoscaling, Autoscaling,
                       what="a serve.Autoscaling", optional=True)
        check.instance("InferenceService.batching", self.batching, Batching,
                       what="a serve.Batching", optional=True)
        check.instance("InferenceService.resources", self.resources, Resources,
                       what="a serve.Resources")
        check.integer("InferenceService.max_ongoing_requests", self.max_ongoing_requests,
                      minimum=1)
        check.integer("InferenceService.max_request_bytes", self.max_request_bytes, minimum=1024)
        if self.auth_token is not None and (not isinstance(self.auth_token, str)
                                            or len(self.auth_token) < 8):
            # The token is a secret: the error shows that it was refused, not what it was.
            raise check.fail("InferenceService.auth_token", "<hidden>",
                             "None or a string of at least 8 characters")
        check.string("InferenceService.payload_log", self.payload_log, optional=True,
                     allowed="a file path, or an http:// or https:// URL")
        if self.payload_log is not None and "://" in self.payload_log and \
                not self.payload_log.startswith(("http://", "https://")):
            raise check.fail("InferenceService.payload_log", self.payload_log,
                             "None, a file path, or an http:// or https:// URL")
        check.choice("InferenceService.explainer", self.explainer, EXPLAINERS, optional=True)
        if self.transformer is not None:
            check_transformer(self.transformer)
        check.boolean("InferenceService.access_log", self.access_log)

    def deploy(self, *, port: int | None = None, timeout_s: float = 300.0) -> _service.Service:
        """Deploy (or update) this service on Ray Serve and wait until it is ready.

        First the checks that need the runtime (the transformer imported and pickled, shap
        installed, a local model directory present), then Ray work.

        Args:
            port: the HTTP port when this call starts Ray Serve (default 8000).
            timeout_s: how long to wait for the service to become ready.

        Returns:
            Service: the handle of the running service (``url``, ``status()``, ``canary()``...).

        Raises:
            SpecError: a check that needs the runtime failed.
            ServiceError: the deployment failed or the service is unhealthy.
            raymlp.errors.TimeoutError: not ready within ``timeout_s``.
        """
        return _service.deploy(self, port=port, timeout_s=timeout_s)

    def _repr_html_(self) -> str:
        import html

        def shown(field: str) -> str:
            value = getattr(self, field)
            return "<hidden>" if field == "auth_token" and value is not None else repr(value)

        rows = "".join(f"<tr><td>{html.escape(f.name)}</td><td><code>{html.escape(shown(f.name))}"
                       "</code></td></tr>" for f in dataclasses.fields(self))
        return f"<b>InferenceService</b><table>{rows}</table>"
