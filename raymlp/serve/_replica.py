"""The Ray Serve deployment behind every inference service: a replica and its routing.

One deployment per service, answering HTTP itself (``__call__``) with the Open Inference
Protocol v2 and KServe v1. Each replica holds the stable model and, during a rollout, the
canary, and picks one per request: version-level traffic split, which Ray Serve lacks, costs no
extra hop. The split and the models live in the deployment's ``user_config``, so changing the
percent, promoting and rolling back are Ray Serve "lightweight updates": ``reconfigure`` on the
live replicas, no restart, no request dropped.

The three inference endpoints (v2 infer, v1 predict, v1 explain) share one request skeleton,
:meth:`ModelServer._serve`: auth, pick the variant, read the body within its limit, decode,
transformer preprocess, model, postprocess, encode, count, payload log. Each endpoint only says
how it decodes, computes and encodes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import re
import time
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from raymlp.serve import _payload as payload
from raymlp.serve import _protocol as oip
from raymlp.serve._decode import Interface
from raymlp.serve._explain import Explainers
from raymlp.serve._metrics import Metrics
from raymlp.serve._model import LoadedModel, check_inputs, load, named_outputs
from raymlp.serve._transformer import Loaded as Transformer

logger = logging.getLogger("raymlp.serve")

ROUTE_KEY_HEADER = "x-raymlp-route-key"  # A/B: the same key always gets the same variant
VARIANT_HEADER = "x-raymlp-variant"

# The service's own routes under its prefix; matched by hand (a web framework's router,
# middleware and dependency solving cost ~30 % of a replica's time per request, measured).
_V2_MODEL = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?/?")
_V1_MODEL = re.compile(r"/v1/models/([^/:]+)(:predict|:explain)?/?")


def _json(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    if hasattr(body, "model_dump_json"):
        content = body.model_dump_json(exclude_none=True)
    else:
        content = json.dumps(body)
    return Response(content, status_code=status, media_type="application/json", headers=headers)


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


def _failure(exc: oip.RequestError) -> Response:
    if exc.status >= 500:  # the service's fault (a transformer bug, say): keep the traceback
        logger.error("%s", exc, exc_info=exc.__cause__)
    return _error(str(exc), exc.status)


class _Variant:
    __slots__ = ("interface", "metadata", "model", "name", "percent", "transformer", "uri",
                 "version")

    def __init__(self, spec: dict, model: LoadedModel, service: str,
                 transformer: Transformer | None):
        self.name = spec["name"]
        self.uri = spec["uri"]
        self.version = spec.get("version")
        self.percent = float(spec["percent"])
        self.model = model
        self.transformer = transformer  # the service's, held per variant: one consistent state
        inputs = transformer.inputs if transformer and transformer.inputs else model.inputs
        outputs = transformer.outputs if transformer and transformer.outputs else model.outputs
        self.metadata = oip.ModelMetadata(
            name=service, versions=[self.version] if self.version else [],
            platform=model.platform, inputs=inputs, outputs=outputs)
        self.interface = Interface(model, transformer)


class _Decoded(NamedTuple):
    """A request body decoded by an endpoint."""

    tensors: dict[str, np.ndarray]
    logged: bytes  # what the payload log records (v2: the JSON part)
    request: Any = None  # the parsed request, when encoding the answer needs it
    id: str | None = None


class _Endpoint(NamedTuple):
    """How one endpoint decodes a body, computes the outputs and encodes the answer."""

    name: str  # in the payload log
    decode: Callable[[_Variant, Request, bytes], _Decoded]
    compute: Callable[[_Variant, dict[str, np.ndarray]], Any]  # a coroutine function
    encode: Callable[[_Variant, Any, _Decoded, str], Response]


@serve.deployment(name="predictor")
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
        self._batch_sizes: dict[int, int] = {}  # requests per batched model call -> calls
        self._metrics = Metrics()
        self._payload: payload.PayloadLogger | None = None
        self._explainer: str | None = None
        self._explainers = Explainers()
        self._transformer: Transformer | None = None
        self._v2 = _Endpoint("v2", self._decode_v2, self._run, self._encode_v2)
        self._v1 = _Endpoint("v1", self._decode_v1, self._run, self._encode_v1)
        self._explain = _Endpoint("explain", self._decode_explain, self._compute_explain,
                                  self._encode_explain)

    async def reconfigure(self, config: dict) -> None:
        """Apply a new service state (models, split, limits) without restarting the replica."""
        from raymlp import _config

        if config.get("tracking_uri"):
            _config.configure(tracking_uri=config["tracking_uri"])
        threads = int(config.get("threads") or 1)
        state = config.get("transformer")
        transformer = self._transformer
        if state is None:
            transformer = None
        elif transformer is None or transformer.sha256 != state["sha256"]:
            transformer = await asyncio.to_thread(Transformer, state)
        variants = []
        for spec in config["variants"]:
            key = (spec["uri"], spec.get("flavor", "auto"))
            model = self._models.get(key)
            if model is None:
                # Load off the event loop: requests keep being served meanwhile.
                model = await asyncio.to_thread(load, key[0], key[1], threads=threads,
                                                gpu=bool(ray.get_gpu_ids()))
            variants.append(_Variant(spec, model, config["service"], transformer))
        self._models = {(v.uri, s.get("flavor", "auto")): v.model
                        for v, s in zip(variants, config["variants"])}
        batching = config.get("batching")
        if batching:
            self._batched.set_max_batch_size(int(batching["max_batch_size"]))
            self._batched.set_batch_wait_timeout_s(float(batching["max_wait_s"]))
        self._service = config["service"]
        self._max_bytes = int(config.get("max_request_bytes") or self._max_bytes)
        self._auth = config.get("auth_sha256")
        self._explainer = config.get("explainer")
        self._explainers = Explainers()
        sink = config.get("payload_log")
        if (self._payload.sink if self._payload else None) != sink:
            old, self._payload = self._payload, payload.PayloadLogger(sink) if sink else None
            if old is not None:
                old.close()
        self._batching = bool(batching)
        self._transformer = transformer
        self._variants = variants  # one assignment: requests see the old or the new state

    # --- routing --------------------------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        scope = request.scope
        path, root = scope["path"], scope.get("root_path") or ""
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        method = scope["method"]
        try:
            match = _V2_MODEL.fullmatch(path)
            if match is not None:
                name, version, action = match.groups()
                if action == "/infer":
                    _allow(method, "POST")
                    return await self._serve(self._v2, request, name, version)
                _allow(method, "GET")
                if action == "/ready":
                    return self._model_ready(request, name, version)
                return self._metadata(request, name, version)
            match = _V1_MODEL.fullmatch(path)
            if match is not None:
                name, action = match.groups()
                if action is None:
                    _allow(method, "GET")
                    return self._model_ready(request, name, None)
                _allow(method, "POST")
                return await self._serve(self._v1 if action == ":predict" else self._explain,
                                         request, name, None)
            _allow(method, "GET")
            path = path.rstrip("/")
            if path == "/v2/health/live":
                return _json({"live": True})
            if path == "/v2/health/ready":
                ok = bool(self._variants)
                return _json({"ready": ok}, 200 if ok else 503)
            if path == "/v2":
                return _json({"name": "raymlp", "version": "2",
                              "extensions": ["binary_tensor_data"]})
            if path == "/raymlp/stats":
                return self._stats()
            raise oip.RequestError(f"no endpoint {path!r}; see /v2/models/{self._service} and "
                                   f"/v1/models/{self._service}:predict", 404)
        except oip.RequestError as exc:
            return _error(str(exc), exc.status)
        except Exception as exc:  # a bug, not the client's mistake: logged, answered as JSON
            logger.exception("%s %s failed", method, path)
            return _error(f"internal error: {type(exc).__name__}: {exc}", 500)

    # --- the request skeleton -------------------------------------------------------------

    async def _serve(self, endpoint: _Endpoint, request: Request, model_name: str,
                     version: str | None) -> Response:
        """Auth and pick a variant, read the body, decode, compute, encode; count the request
        and log its payload whatever the outcome."""
        started = time.perf_counter()
        variant = raw = None
        name = "none"
        try:
            variant = self._pick(request, model_name, version)
            name = variant.name
            raw = await self._body(request)
            decoded = endpoint.decode(variant, request, raw)
            raw = decoded.logged
            out = await endpoint.compute(variant, decoded.tensors)
            response = endpoint.encode(variant, out, decoded, model_name)
            self._count(name, 200, started)
            return self._logged(response, endpoint.name, variant, raw, started, decoded.id)
        except oip.RequestError as exc:
            self._count(name, exc.status, started)
            return self._logged(_failure(exc), endpoint.name, variant, raw, started)

    def _pick(self, request: Request, model_name: str, version: str | None = None) -> _Variant:
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

    async def _model_input(self, variant: _Variant, tensors: dict[str, np.ndarray]) -> Any:
        """Request tensors -> what the model takes, through the transformer's preprocess."""
        model = variant.model
        if variant.transformer is not None:
            x = await variant.transformer.preprocess(tensors)
            if not isinstance(x, dict):
                return x
            check_inputs(model.inputs, list(x), "the model (after preprocess)")
            tensors = {k: np.asarray(v) for k, v in x.items()}
        if model.columnar:
            rows = {len(t) for t in tensors.values()}
            if len(rows) > 1:
                raise oip.RequestError(f"column inputs have different lengths {sorted(rows)}")
        return model.assemble(tensors)

    async def _run(self, variant: _Variant, tensors: dict[str, np.ndarray]
                   ) -> dict[str, np.ndarray]:
        """Preprocess, predict (batched when enabled), postprocess: named output arrays."""
        out = await self._predict(variant, await self._model_input(variant, tensors))
        if isinstance(out, oip.RequestError):
            raise out
        tf = variant.transformer
        if tf is None:
            return out
        single = (tf.outputs[0].name if tf.outputs
                  else next(iter(out)) if len(out) == 1 else "output-0")
        return named_outputs(await tf.postprocess(out), single)

    async def _predict(self, variant: _Variant, x: Any) -> dict[str, np.ndarray]:
        if self._batching and variant.model.single_input and isinstance(x, np.ndarray):
            return await self._batched((variant, x))
        try:
            return variant.model.predict(x)
        except oip.REJECTED as exc:
            raise oip.RequestError(f"the model rejected the input: {exc}", 400) from None

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _batched(self, items: list[tuple[_Variant, np.ndarray]]) -> list:
        self._batch_sizes[len(items)] = self._batch_sizes.get(len(items), 0) + 1
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
            except oip.REJECTED:
                for i in idx:  # one bad request must not fail its batch: retry one by one
                    try:
                        results[i] = variant.model.predict(items[i][1])
                    except oip.REJECTED as one:
                        results[i] = oip.RequestError(f"the model rejected the input: {one}")
        return results

    def _logged(self, response: Response, endpoint: str, variant: _Variant | None,
                raw: bytes | None, started: float, request_id: str | None = None):
        if self._payload is not None:
            self._payload.log(payload.record(self._service, endpoint, variant,
                                             response.status_code, started, request_id),
                              raw, getattr(response, "json_part", response.body))
        return response

    def _count(self, variant: str, status: int, started: float) -> None:
        self._counts[variant] = self._counts.get(variant, 0) + 1
        self._metrics.observe(self._service, variant, status, time.perf_counter() - started)

    # --- Open Inference Protocol v2 ------------------------------------------------------

    def _decode_v2(self, variant: _Variant, request: Request, raw: bytes) -> _Decoded:
        head, binary = oip.split_binary(raw, request.headers.get(oip.BINARY_HEADER))
        req = oip.parse(oip.InferenceRequest, head)
        return _Decoded(variant.interface.v2(req.inputs, binary), head, req, req.id)

    def _encode_v2(self, variant: _Variant, out: dict[str, np.ndarray], decoded: _Decoded,
                   model_name: str) -> Response:
        """The infer answer: JSON, or JSON then the binary tensors (binary tensor data
        extension), as the request's parameters ask."""
        req = decoded.request
        all_binary = bool((req.parameters or {}).get("binary_data_output"))
        as_binary = {n: all_binary for n in out}
        if req.outputs:
            unknown = [o.name for o in req.outputs if o.name not in out]
            if unknown:
                raise oip.RequestError(f"unknown output(s) {unknown}; the model gives "
                                       f"{sorted(out)}")
            as_binary = {o.name: bool((o.parameters or {}).get("binary_data", all_binary))
                         for o in req.outputs}
        encoded = [oip.encode(n, out[n], b) for n, b in as_binary.items()]
        resp = oip.InferenceResponse(model_name=model_name, model_version=variant.version,
                                     id=req.id, outputs=[e[0] for e in encoded])
        binary = b"".join(e[1] for e in encoded)
        headers = {VARIANT_HEADER: variant.name}
        if not binary:
            return _json(resp, headers=headers)
        head = resp.model_dump_json(exclude_none=True).encode()
        headers[oip.BINARY_HEADER] = str(len(head))
        response = Response(head + binary, media_type="application/octet-stream", headers=headers)
        response.json_part = head  # what the payload log records
        return response

    def _metadata(self, request: Request, model_name: str, version: str | None) -> Response:
        variant = self._pick(request, model_name, version)
        if version is None:  # the service as a whole: the stable signature, every version
            return _json(self._variants[0].metadata.model_copy(update={
                "versions": [v.version for v in self._variants if v.version]}))
        return _json(variant.metadata)

    def _model_ready(self, request: Request, model_name: str, version: str | None) -> Response:
        self._pick(request, model_name, version)
        return _json({"name": model_name, "ready": True})

    # --- KServe v1 ------------------------------------------------------------------------

    def _decode_v1(self, variant: _Variant, request: Request, raw: bytes) -> _Decoded:
        return _Decoded(variant.interface.v1(raw), raw)

    def _encode_v1(self, variant: _Variant, out: dict[str, np.ndarray], decoded: _Decoded,
                   model_name: str) -> Response:
        if len(out) == 1:
            predictions = next(iter(out.values())).tolist()
        else:
            cols = {k: v.tolist() for k, v in out.items()}
            predictions = [dict(zip(cols, row)) for row in zip(*cols.values())]
        return _json({"predictions": predictions}, headers={VARIANT_HEADER: variant.name})

    def _decode_explain(self, variant: _Variant, request: Request, raw: bytes) -> _Decoded:
        if self._explainer is None:
            raise oip.RequestError(f"service {self._service!r} has no explainer; deploy it "
                                   "with explainer='shap'", 404)
        return self._decode_v1(variant, request, raw)

    async def _compute_explain(self, variant: _Variant, tensors: dict[str, np.ndarray]) -> dict:
        """Preprocess, then the explainer over the model (no postprocess: attributions are
        per model input feature)."""
        x = await self._model_input(variant, tensors)
        if not isinstance(x, np.ndarray) or x.ndim != 2:
            raise oip.RequestError("explain takes a batch of feature vectors (a 2-d tensor)")
        return await asyncio.to_thread(self._explainers.explain, variant.model, x)

    def _encode_explain(self, variant: _Variant, out: dict, decoded: _Decoded,
                        model_name: str) -> Response:
        return _json(out, headers={VARIANT_HEADER: variant.name})

    # --- raymlp ---------------------------------------------------------------------------

    def _stats(self) -> Response:
        return _json({"counts": self._counts, "batch_sizes": self._batch_sizes,
                      "variants": [{"name": v.name, "uri": v.uri, "version": v.version,
                                    "percent": v.percent, "flavor": v.model.flavor,
                                    "device": v.model.device, "format": v.model.format,
                                    "fallback": v.model.fallback}
                                   for v in self._variants]})


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise oip.RequestError(f"method {method} is not allowed here; use {allowed}", 405)
