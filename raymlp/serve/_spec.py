"""The inference service spec: frozen, keyword-only dataclasses validated on construction."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from raymlp.errors import SpecError

FLAVORS = ("auto", "pyfunc", "sklearn", "torch", "xgboost")
EXPLAINERS = ("shap",)
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_URI_SCHEMES = ("models:/", "runs:/", "file:", "s3://", "gs://", "abfss://", "hdfs://", "http://",
                "https://", "dbfs:/", "mlflow-artifacts:/")


def _fail(field: str, value: object, allowed: str) -> SpecError:
    return SpecError(f"{field} must be {allowed}, got {value!r}", field=field, value=value)


def _number(field: str, value: object, *, minimum: float, integer: bool = False,
            strict: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    if ok:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        what = "an integer" if integer else "a number"
        raise _fail(field, value, f"{what} {'>' if strict else '>='} {minimum:g}")


def check_model_uri(field: str, uri: object) -> str:
    """Validate a model URI: ``models:/name@alias``, ``models:/name/version``, ``runs:/...``,
    a remote artifact URL, or an existing local directory."""
    allowed = ("'models:/NAME@ALIAS', 'models:/NAME/VERSION', 'models:/LOGGED_MODEL_ID', "
               "'runs:/RUN_ID/PATH', "
               "an artifact URL or an existing local model directory")
    if not isinstance(uri, str) or not uri.strip():
        raise _fail(field, uri, allowed)
    if uri.startswith("models:/"):
        rest = uri[len("models:/"):]
        if not re.fullmatch(r"[^/@]+(@[^/@]+|/[0-9]+)?", rest):
            raise _fail(field, uri, allowed)
        return uri
    if uri.startswith(_URI_SCHEMES):
        return uri
    if not Path(uri).expanduser().is_dir():
        raise SpecError(f"{field}: no model directory at {uri!r}; allowed: {allowed}",
                        field=field, value=uri)
    return str(Path(uri).expanduser().resolve())


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
        _number("Autoscaling.min_replicas", self.min_replicas, minimum=0, integer=True)
        _number("Autoscaling.max_replicas", self.max_replicas, minimum=1, integer=True)
        if self.max_replicas < self.min_replicas:
            raise _fail("Autoscaling.max_replicas", self.max_replicas,
                        f">= Autoscaling.min_replicas ({self.min_replicas})")
        _number("Autoscaling.target_ongoing_requests", self.target_ongoing_requests,
                minimum=0, strict=True)
        _number("Autoscaling.upscale_delay_s", self.upscale_delay_s, minimum=0)
        _number("Autoscaling.downscale_delay_s", self.downscale_delay_s, minimum=0)

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
        max_wait_ms: longest a request waits for a batch to fill (>= 0).
    """

    max_batch_size: int = 16
    max_wait_ms: float = 2.0

    def __post_init__(self) -> None:
        _number("Batching.max_batch_size", self.max_batch_size, minimum=1, integer=True)
        _number("Batching.max_wait_ms", self.max_wait_ms, minimum=0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Resources:
    """Resources of one replica (fractional CPUs and GPUs allowed).

    Attributes:
        num_cpus: CPUs reserved per replica (> 0).
        num_gpus: GPUs per replica, e.g. 0.5 to pack two replicas on a GPU (>= 0).
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        _number("Resources.num_cpus", self.num_cpus, minimum=0, strict=True)
        _number("Resources.num_gpus", self.num_gpus, minimum=0)


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
        flavor: how replicas load the model: ``auto`` (the native flavor when it is sklearn,
            torch or xgboost, else pyfunc) or one of ``pyfunc``, ``sklearn``, ``torch``,
            ``xgboost``.
        replicas: the fixed replica count when ``autoscaling`` is None.
        autoscaling: autoscaling bounds and target, or None for a fixed count.
        batching: server-side batching, or None to predict each request alone.
        resources: CPUs and GPUs per replica.
        max_ongoing_requests: requests one replica works on at once.
        max_request_bytes: larger request bodies get 413.
        auth_token: when set, requests must carry ``Authorization: Bearer <token>``.
        explainer: ``"shap"`` adds ``POST /v1/models/NAME:explain``: per-feature SHAP
            attributions (``shap.Explainer`` over the model, with the input example logged
            with the model as background data). Needs ``pip install 'raymlp[explain]'``.
        payload_log: log every inference request and its answer (JSON) to this sink: a file
            path (JSON lines, appended by every replica) or an ``http(s)://`` URL (batches
            POSTed as JSON arrays). Logging never delays or fails a request.
        transformer: user pre/post-processing run in every replica around the model: a
            :class:`raymlp.serve.Transformer` subclass (or any class or instance with a
            ``preprocess`` and/or ``postprocess`` method), or ``"module:Class"``. Shipped to the
            replicas by value; see :class:`~raymlp.serve.Transformer`.
        access_log: write Ray Serve's per-request access log line in every replica (off by
            default: it costs ~4 % of a replica's time; the payload log and the Prometheus
            metrics record every request anyway).

    Example:
        >>> svc = InferenceService(name="digits", model="models:/digits@champion",
        ...                        autoscaling=Autoscaling(min_replicas=1, max_replicas=4))
        >>> svc.deploy(); svc.canary("models:/digits/7", percent=10); svc.promote()
    """

    name: str
    model: str
    canary_model: str | None = None
    canary_percent: float = 0.0
    flavor: str = "auto"
    replicas: int = 1
    autoscaling: Autoscaling | None = None
    batching: Batching | None = None
    resources: Resources = dataclasses.field(default_factory=Resources)
    max_ongoing_requests: int = 64
    max_request_bytes: int = 8 * 1024 * 1024
    auth_token: str | None = None
    payload_log: str | None = None
    explainer: str | None = None
    transformer: object | None = None
    access_log: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise _fail("InferenceService.name", self.name,
                        "a DNS label (lowercase letters, digits and '-', 1-63 characters)")
        object.__setattr__(self, "model", check_model_uri("InferenceService.model", self.model))
        if self.canary_model is not None:
            object.__setattr__(self, "canary_model",
                               check_model_uri("InferenceService.canary_model", self.canary_model))
        check_percent("InferenceService.canary_percent", self.canary_percent)
        if self.canary_model is None and self.canary_percent:
            raise _fail("InferenceService.canary_percent", self.canary_percent,
                        "0 when no canary_model is given")
        if self.flavor not in FLAVORS:
            raise _fail("InferenceService.flavor", self.flavor, f"one of {list(FLAVORS)}")
        _number("InferenceService.replicas", self.replicas, minimum=1, integer=True)
        for field, kind in (("autoscaling", Autoscaling), ("batching", Batching),
                            ("resources", Resources)):
            value = getattr(self, field)
            if value is not None and not isinstance(value, kind):
                raise _fail(f"InferenceService.{field}", value, f"a serve.{kind.__name__}")
        if self.resources is None:
            raise _fail("InferenceService.resources", None, "a serve.Resources")
        _number("InferenceService.max_ongoing_requests", self.max_ongoing_requests, minimum=1,
                integer=True)
        _number("InferenceService.max_request_bytes", self.max_request_bytes, minimum=1024,
                integer=True)
        if self.auth_token is not None and (not isinstance(self.auth_token, str)
                                            or len(self.auth_token) < 8):
            raise _fail("InferenceService.auth_token", "<hidden>",
                        "None or a string of at least 8 characters")

        if self.payload_log is not None and (
                not isinstance(self.payload_log, str) or not self.payload_log.strip()
                or ("://" in self.payload_log
                    and not self.payload_log.startswith(("http://", "https://")))):
            raise _fail("InferenceService.payload_log", self.payload_log,
                        "None, a file path, or an http:// or https:// URL")

        if self.transformer is not None:
            from raymlp.serve._transformer import pack, resolve

            object.__setattr__(self, "transformer", resolve(self.transformer))
            pack(self.transformer)  # fails here, not at deploy, when it cannot be pickled
        if not isinstance(self.access_log, bool):
            raise _fail("InferenceService.access_log", self.access_log, "True or False")
        if self.explainer is not None:
            if self.explainer not in EXPLAINERS:
                raise _fail("InferenceService.explainer", self.explainer,
                            f"None or one of {list(EXPLAINERS)}")
            from raymlp._imports import require

            require("shap", purpose="InferenceService.explainer='shap'", load=False)

    def deploy(self, *, port: int | None = None, wait_s: float = 300.0):
        """Deploy (or update) this service on Ray Serve; returns its :class:`ServiceStatus`.

        Args:
            port: the HTTP port when this call starts Ray Serve (default 8000).
            wait_s: how long to wait for the service to become ready.
        """
        from raymlp.serve import _service

        return _service.deploy(self, port=port, wait_s=wait_s)

    def canary(self, model: str, *, percent: float):
        """Add or replace the canary of the deployed service; see :func:`raymlp.serve.canary`."""
        from raymlp.serve import _service

        return _service.canary(self.name, model, percent=percent)

    def set_canary_percent(self, percent: float):
        from raymlp.serve import _service

        return _service.set_canary_percent(self.name, percent)

    def promote(self):
        from raymlp.serve import _service

        return _service.promote(self.name)

    def rollback(self):
        from raymlp.serve import _service

        return _service.rollback(self.name)

    def status(self):
        from raymlp.serve import _service

        return _service.status(self.name)

    def delete(self) -> None:
        from raymlp.serve import _service

        _service.delete(self.name)


def check_percent(field: str, value: object) -> float:
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not 0 <= value <= 100):
        raise _fail(field, value, "a number from 0 to 100")
    return float(value)
