"""The Ray Serve deployment behind every inference service.

One deployment per service, FastAPI ingress, serving the Open Inference Protocol v2 and KServe
v1. Each replica holds the stable model and, during a rollout, the canary, and picks one per
request: version-level traffic split, which Ray Serve lacks, costs no extra hop. The split and
the models live in the deployment's ``user_config``, so changing the percent, promoting and
rolling back are Ray Serve "lightweight updates": ``reconfigure`` on the live replicas, no
restart, no request dropped.
"""


import asyncio
import hashlib
import hmac
import logging
import random
import time
import zlib
from typing import Any, Optional

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve

from raymlp.serve import _payload as payload
from raymlp.serve import _protocol as oip
from raymlp.serve._model import LoadedModel, check_inputs, load

logger = logging.getLogger("raymlp.serve")

ROUTE_KEY_HEADER = "x-raymlp-route-key"  # A/B: the same key always gets the same variant
VARIANT_HEADER = "x-raymlp-variant"
_MODEL_ERRORS = (ValueError, TypeError, IndexError, KeyError)

app = FastAPI(title="raymlp inference service", docs_url=None, redoc_url=None,
              openapi_url=None)


def _json(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    if hasattr(body, "model_dump_json"):
        content = body.model_dump_json(exclude_none=True)
    else:
        import json

        content = json.dumps(body)
    return Response(content, status_code=status, media_type="application/json", headers=headers)


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


class _Variant:
    __slots__ = ("name", "model_uri", "uri", "version", "percent", "model", "metadata")

    def __init__(self, spec: dict, model: LoadedModel, service: str):
        self.name = spec["name"]
        self.model_uri = spec["model"]
        self.uri = spec["uri"]
        self.version = spec.get("version")
        self.percent = float(spec["percent"])
        self.model = model
        self.metadata = oip.ModelMetadata(
            name=service, versions=[self.version] if self.version else [],
            platform=f"mlflow-{model.flavor}", inputs=model.inputs, outputs=model.outputs)


def _v1_input(model: LoadedModel, instances: list) -> Any:
    if model.columnar:
        cols = [s.name for s in model.inputs]
        if all(isinstance(r, dict) for r in instances):
            missing = sorted({c for r in instances for c in cols if c not in r})
            if missing:
                raise oip.RequestError(f"instances miss column(s) {missing}; the model takes "
                                       f"{cols}")
            rows = [[r[c] for c in cols] for r in instances]
        else:
            rows = instances
        tensors = {}
        for j, spec in enumerate(model.inputs):
            try:
                column = [row[j] for row in rows]
            except (TypeError, IndexError, KeyError):
                raise oip.RequestError(f"each instance must hold {len(cols)} values "
                                       f"({cols})") from None
            if any(len(row) != len(cols) for row in rows):
                raise oip.RequestError(f"each instance must hold {len(cols)} values ({cols})")
            tensors[spec.name] = oip.decode(oip.RequestInput(
                name=spec.name, shape=[len(column)], datatype=spec.datatype, data=column), spec)
        return model.assemble(tensors)
    if len(model.inputs) > 1:
        raise oip.RequestError("this model takes several named inputs: use the v2 infer API")
    spec = model.inputs[0] if model.inputs else None
    try:
        arr = np.asarray(instances)
    except ValueError as exc:
        raise oip.RequestError(f"instances are ragged: {exc}") from None
    if arr.dtype == object:
        raise oip.RequestError("instances must be a rectangular list of numbers")
    datatype = spec.datatype if spec else oip.datatype_of(arr.dtype)
    return oip.decode(oip.RequestInput(name=spec.name if spec else "input-0",
                                       shape=list(arr.shape), datatype=datatype,
                                       data=arr.reshape(-1).tolist()), spec)


def _v1_batch(model: LoadedModel, raw: bytes) -> Any:
    """The model input of a KServe v1 body (``instances``, or ``inputs``)."""
    req = oip.parse(oip.V1Request, raw)
    instances = req.instances if req.instances is not None else req.inputs
    if not isinstance(instances, list) or not instances:
        raise oip.RequestError("body must hold a non-empty 'instances' list")
    return _v1_input(model, instances)


class _Metrics:
    """Prometheus metrics per service and variant, exported by Ray's metrics agent."""

    def __init__(self) -> None:
        try:
            from ray.serve import metrics

            tags = ("service", "variant", "code")
            self._requests = metrics.Counter(
                "raymlp_serve_requests", description="Inference requests per variant and code.",
                tag_keys=tags)
            self._latency = metrics.Histogram(
                "raymlp_serve_latency_ms", description="Inference latency in milliseconds.",
                boundaries=[0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1000], tag_keys=tags)
        except Exception:  # metrics are best effort: never fail a replica over them
            self._requests = self._latency = None

    def observe(self, service: str, variant: str, status: int, seconds: float) -> None:
        if self._requests is None:
            return
        tags = {"service": service, "variant": variant, "code": str(status)}
        self._requests.inc(1, tags=tags)
        self._latency.observe(seconds * 1000.0, tags=tags)


@serve.deployment(name="predictor")
@serve.ingress(app)
class ModelServer:
    """A replica: the service's models, the traffic split, and the protocol endpoints."""

    def __init__(self) -> None:
        self._service = ""
        self._variants: list[_Variant] = []
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._max_bytes = 8 * 1024 * 1024
        self._auth: str | None = None
        self._batching = False
        self._counts: dict[str, int] = {}
        self._metrics = _Metrics()
        self._payload: Optional[payload.PayloadLogger] = None
        self._explainer: Optional[str] = None
        self._explainers: dict[int, Any] = {}

    async def reconfigure(self, config: dict) -> None:
        """Apply a new service state (models, split, limits) without restarting the replica."""
        from raymlp import _config

        if config.get("tracking_uri"):
            _config.configure(tracking_uri=config["tracking_uri"])
        threads = int(config.get("threads") or 1)
        variants = []
        for spec in config["variants"]:
            key = (spec["uri"], spec.get("flavor", "auto"))
            model = self._models.get(key)
            if model is None:
                # Load off the event loop: requests keep being served meanwhile.
                model = await asyncio.to_thread(load, key[0], key[1], threads=threads)
            variants.append(_Variant(spec, model, config["service"]))
        self._models = {(v.uri, s.get("flavor", "auto")): v.model
                        for v, s in zip(variants, config["variants"])}
        batching = config.get("batching")
        if batching:
            self._batched.set_max_batch_size(int(batching["max_batch_size"]))
            self._batched.set_batch_wait_timeout_s(float(batching["max_wait_ms"]) / 1000.0)
        self._service = config["service"]
        self._max_bytes = int(config.get("max_request_bytes") or self._max_bytes)
        self._auth = config.get("auth_sha256")
        self._explainer = config.get("explainer")
        self._explainers = {}
        sink = config.get("payload_log")
        if (self._payload.sink if self._payload else None) != sink:
            old, self._payload = self._payload, payload.PayloadLogger(sink) if sink else None
            if old is not None:
                old.close()
        self._batching = bool(batching)
        self._variants = variants  # one assignment: requests see the old or the new state

    # --- routing -------------------------------------------------------------------------

    def _pick(self, request: Request, model_name: str, version: Optional[str] = None) -> _Variant:
        if self._auth is not None:
            header = request.headers.get("authorization", "")
            token = header[7:] if header[:7].lower() == "bearer " else ""
            digest = hashlib.sha256(token.encode()).hexdigest()
            if not hmac.compare_digest(digest, self._auth):
                raise oip.RequestError("missing or wrong bearer token", 401)
        if model_name != self._service:
            raise oip.RequestError(
                f"model {model_name!r} not found; this service serves {self._service!r}", 404)
        variants = self._variants
        if version is not None:
            for v in variants:
                if v.version == version:
                    return v
            raise oip.RequestError(
                f"model {model_name!r} has no version {version!r} being served; serving "
                f"{[v.version for v in variants]}", 404)
        if len(variants) == 1:
            return variants[0]
        canary = variants[1]
        key = request.headers.get(ROUTE_KEY_HEADER)
        if key is not None:  # sticky per caller
            draw = (zlib.crc32(key.encode()) % 10000) / 100.0
        else:
            draw = random.random() * 100.0
        return canary if draw < canary.percent else variants[0]

    async def _body(self, request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_bytes:
            raise oip.RequestError(f"request body of {length} bytes is over the limit of "
                                   f"{self._max_bytes} bytes", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._max_bytes:
                raise oip.RequestError(f"request body is over the limit of {self._max_bytes} "
                                       f"bytes", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _predict(self, variant: _Variant, x: Any) -> dict[str, np.ndarray]:
        if self._batching and variant.model.single_input and isinstance(x, np.ndarray):
            return await self._batched((variant, x))
        try:
            return variant.model.predict(x)
        except _MODEL_ERRORS as exc:
            raise oip.RequestError(f"the model rejected the input: {exc}", 400) from None

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _batched(self, items: list[tuple[_Variant, np.ndarray]]) -> list:
        results: list = [None] * len(items)
        groups: dict[int, list[int]] = {}
        for i, (variant, _) in enumerate(items):
            groups.setdefault(id(variant), []).append(i)
        for idx in groups.values():
            variant = items[idx[0]][0]
            try:
                xs = [items[i][1] for i in idx]
                out = variant.model.predict(np.concatenate(xs) if len(xs) > 1 else xs[0])
                offsets = np.cumsum([len(x) for x in xs])[:-1]
                split = {k: np.split(v, offsets) for k, v in out.items()}
                for j, i in enumerate(idx):
                    results[i] = {k: parts[j] for k, parts in split.items()}
            except _MODEL_ERRORS as exc:
                for i in idx:  # one bad request must not fail its batch: retry one by one
                    try:
                        results[i] = variant.model.predict(items[i][1])
                    except _MODEL_ERRORS as one:
                        results[i] = oip.RequestError(f"the model rejected the input: {one}")
                del exc
        return results

    def _logged(self, response: Response, endpoint: str, variant: Optional[_Variant],
                raw: Optional[bytes], started: float, request_id: Optional[str] = None):
        if self._payload is not None:
            self._payload.log(payload.record(self._service, endpoint, variant,
                                             response.status_code, started, request_id),
                              raw, response.body)
        return response

    def _count(self, variant: str, status: int, started: float) -> None:
        self._counts[variant] = self._counts.get(variant, 0) + 1
        self._metrics.observe(self._service, variant, status, time.perf_counter() - started)

    # --- Open Inference Protocol v2 ------------------------------------------------------

    @app.get("/v2/health/live")
    async def live(self):
        return _json({"live": True})

    @app.get("/v2/health/ready")
    async def ready(self):
        ok = bool(self._variants)
        return _json({"ready": ok}, 200 if ok else 503)

    @app.get("/v2")
    async def server_metadata(self):
        return _json({"name": "raymlp", "version": "2", "extensions": []})

    @app.get("/v2/models/{model_name}")
    async def model_metadata(self, model_name: str, request: Request):
        return self._metadata(request, model_name, None)

    @app.get("/v2/models/{model_name}/versions/{version}")
    async def version_metadata(self, model_name: str, version: str, request: Request):
        return self._metadata(request, model_name, version)

    def _metadata(self, request: Request, model_name: str, version: str | None):
        try:
            variant = self._pick(request, model_name, version) if version else None
            if variant is None:
                self._pick(request, model_name, self._variants[0].version
                           if self._variants[0].version else None)
                variant = self._variants[0]
                meta = variant.metadata.model_copy(update={
                    "versions": [v.version for v in self._variants if v.version]})
                return _json(meta)
            return _json(variant.metadata)
        except oip.RequestError as exc:
            return _error(str(exc), exc.status)

    @app.get("/v2/models/{model_name}/ready")
    async def model_ready(self, model_name: str, request: Request):
        try:
            self._pick(request, model_name)
        except oip.RequestError as exc:
            return _error(str(exc), exc.status)
        return _json({"name": model_name, "ready": True})

    @app.post("/v2/models/{model_name}/infer")
    async def infer(self, model_name: str, request: Request):
        return await self._infer(request, model_name, None)

    @app.post("/v2/models/{model_name}/versions/{version}/infer")
    async def infer_version(self, model_name: str, version: str, request: Request):
        return await self._infer(request, model_name, version)

    async def _infer(self, request: Request, model_name: str, version: str | None):
        started = time.perf_counter()
        name = "none"
        variant = raw = None
        try:
            variant = self._pick(request, model_name, version)
            name = variant.name
            raw = await self._body(request)
            req = oip.parse(oip.InferenceRequest, raw)
            model = variant.model
            check_inputs(model, [i.name for i in req.inputs])
            specs = {s.name: s for s in model.inputs}
            tensors = {i.name: oip.decode(i, specs.get(i.name)) for i in req.inputs}
            if model.columnar:
                rows = {len(t) for t in tensors.values()}
                if len(rows) > 1:
                    raise oip.RequestError(f"column inputs have different lengths {sorted(rows)}")
            out = await self._predict(variant, model.assemble(tensors))
            if isinstance(out, oip.RequestError):
                raise out
            wanted = [o.name for o in req.outputs] if req.outputs else None
            if wanted:
                unknown = [n for n in wanted if n not in out]
                if unknown:
                    raise oip.RequestError(f"unknown output(s) {unknown}; the model gives "
                                           f"{sorted(out)}")
                out = {n: out[n] for n in wanted}
            resp = oip.InferenceResponse(
                model_name=model_name, model_version=variant.version, id=req.id,
                outputs=[oip.encode(k, v) for k, v in out.items()])
            self._count(name, 200, started)
            return self._logged(_json(resp, headers={VARIANT_HEADER: name}), "v2", variant, raw,
                                started, req.id)
        except oip.RequestError as exc:
            self._count(name, exc.status, started)
            return self._logged(_error(str(exc), exc.status), "v2", variant, raw, started)

    # --- KServe v1 ------------------------------------------------------------------------

    @app.post("/v1/models/{model_name}:predict")
    async def v1_predict(self, model_name: str, request: Request):
        started = time.perf_counter()
        name = "none"
        variant = raw = None
        try:
            variant = self._pick(request, model_name)
            name = variant.name
            raw = await self._body(request)
            x = _v1_batch(variant.model, raw)
            out = await self._predict(variant, x)
            if isinstance(out, oip.RequestError):
                raise out
            if len(out) == 1:
                predictions = next(iter(out.values())).tolist()
            else:
                cols = {k: v.tolist() for k, v in out.items()}
                predictions = [dict(zip(cols, row)) for row in zip(*cols.values())]
            self._count(name, 200, started)
            return self._logged(_json({"predictions": predictions}, headers={VARIANT_HEADER: name}),
                                "v1", variant, raw, started)
        except oip.RequestError as exc:
            self._count(name, exc.status, started)
            return self._logged(_error(str(exc), exc.status), "v1", variant, raw, started)

    @app.post("/v1/models/{model_name}:explain")
    async def v1_explain(self, model_name: str, request: Request):
        started = time.perf_counter()
        variant = raw = None
        try:
            variant = self._pick(request, model_name)
            if self._explainer is None:
                raise oip.RequestError(f"service {self._service!r} has no explainer; deploy it "
                                       "with explainer='shap'", 404)
            raw = await self._body(request)
            x = _v1_batch(variant.model, raw)
            if not isinstance(x, np.ndarray) or x.ndim != 2:
                raise oip.RequestError("explain takes a batch of feature vectors (a 2-d tensor)")
            explanation = await asyncio.to_thread(self._explain, variant, x)
            self._count(variant.name, 200, started)
            return self._logged(_json(explanation, headers={VARIANT_HEADER: variant.name}),
                                "explain", variant, raw, started)
        except oip.RequestError as exc:
            self._count(getattr(variant, "name", "none"), exc.status, started)
            return self._logged(_error(str(exc), exc.status), "explain", variant, raw, started)

    def _explain(self, variant: _Variant, x: np.ndarray) -> dict:
        import shap

        explainer = self._explainers.get(id(variant))
        if explainer is None:
            background = variant.model.example
            if background is None:
                raise oip.RequestError("the model was logged without an input example, which "
                                       "the explainer needs as background data", 400)
            background = np.asarray(background, dtype=x.dtype).reshape(-1, x.shape[1])

            def f(batch):
                return next(iter(variant.model.predict(batch.astype(x.dtype)).values()))

            explainer = shap.Explainer(f, background)
            self._explainers[id(variant)] = explainer
        try:
            result = explainer(x)
        except _MODEL_ERRORS as exc:
            raise oip.RequestError(f"the model rejected the input: {exc}", 400) from None
        return {"explanations": {"method": f"shap.{type(explainer).__name__}",
                                 "values": np.asarray(result.values).tolist(),
                                 "base_values": np.asarray(result.base_values).tolist()}}

    @app.get("/v1/models/{model_name}")
    async def v1_status(self, model_name: str, request: Request):
        return await self.model_ready(model_name, request)

    # --- raymlp ---------------------------------------------------------------------------

    @app.get("/raymlp/stats")
    async def stats(self):
        return _json({"counts": self._counts,
                      "variants": [{"name": v.name, "uri": v.uri, "version": v.version,
                                    "percent": v.percent} for v in self._variants]})
