"""Open Inference Protocol v2 (and KServe v1) bodies, and tensor decoding checked against the
model's signature. Every problem with a request becomes a :class:`RequestError` (a 4xx)."""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

# OIP datatype <-> numpy dtype.
DATATYPES = {
    "BOOL": np.dtype(bool),
    "INT8": np.dtype(np.int8), "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_KINDS = {"BOOL": "b", "BYTES": "OUS"}


def datatype_of(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind in "OUS":
        return "BYTES"
    for name, dt in DATATYPES.items():
        if dt == dtype:
            return name
    return "BYTES"


# What a model or transformer raises when it rejects its input (the client's problem: a 400).
REJECTED = (ValueError, TypeError, IndexError, KeyError)


class RequestError(Exception):
    """A request the service cannot take: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class RequestInput(_Body):
    name: str
    shape: list[int]
    datatype: str
    parameters: Optional[dict[str, Any]] = None
    data: list[Any]


class RequestOutput(_Body):
    name: str
    parameters: Optional[dict[str, Any]] = None


class InferenceRequest(_Body):
    id: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    inputs: list[RequestInput]
    outputs: Optional[list[RequestOutput]] = None


class ResponseOutput(_Body):
    name: str
    shape: list[int]
    datatype: str
    parameters: Optional[dict[str, Any]] = None
    data: list[Any]


class InferenceResponse(_Body):
    model_name: str
    model_version: Optional[str] = None
    id: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    outputs: list[ResponseOutput]


class TensorMetadata(_Body):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(_Body):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class V1Request(_Body):
    instances: Optional[list[Any]] = None
    inputs: Optional[Union[list[Any], dict[str, Any]]] = None


def parse(model: type[BaseModel], body: bytes) -> Any:
    """Validate a JSON body into ``model``; a 400 names what is wrong."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors()
        if errors and errors[0].get("type") == "json_invalid":
            raise RequestError(f"request body is not valid JSON: {errors[0].get('msg')}") from None
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: {e.get('msg')}"
            for e in errors[:5]
        )
        raise RequestError(f"invalid {model.__name__}: {problems}") from None


def decode(inp: RequestInput, spec: TensorMetadata | None) -> np.ndarray:
    """One request tensor as a numpy array, checked against ``spec`` (datatype and shape)."""
    if inp.datatype not in DATATYPES:
        raise RequestError(f"input {inp.name!r}: unknown datatype {inp.datatype!r}; "
                           f"allowed: {sorted(DATATYPES)}")
    if spec is not None and inp.datatype != spec.datatype:
        raise RequestError(f"input {inp.name!r}: datatype {inp.datatype} does not match the "
                           f"model's {spec.datatype}")
    if any(d < 0 for d in inp.shape):
        raise RequestError(f"input {inp.name!r}: shape {inp.shape} has a negative dimension")
    if spec is not None:
        if len(inp.shape) != len(spec.shape) or any(
                want != -1 and want != got for want, got in zip(spec.shape, inp.shape)):
            raise RequestError(f"input {inp.name!r}: shape {inp.shape} does not match the "
                               f"model's {spec.shape} (-1: any size)")
    dtype = DATATYPES[inp.datatype]
    try:
        if inp.datatype == "BYTES":
            arr = np.asarray(_flatten(inp.data), dtype=object)
            bad = [v for v in arr.tolist() if not isinstance(v, str)]
            if bad:
                raise RequestError(f"input {inp.name!r}: BYTES data must be strings, "
                                   f"got {bad[0]!r}")
        else:
            raw = np.asarray(inp.data)
            if raw.dtype == object or raw.ndim > 1 and raw.dtype.kind not in "biuf":
                raw = np.asarray(_flatten(inp.data))
            kind = raw.dtype.kind
            if raw.size and not _compatible(inp.datatype, kind):
                raise RequestError(f"input {inp.name!r}: data of kind {raw.dtype.name} does not "
                                   f"fit datatype {inp.datatype}")
            arr = raw.astype(dtype, copy=False).reshape(-1)
    except RequestError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise RequestError(f"input {inp.name!r}: data cannot be read as {inp.datatype}: "
                           f"{exc}") from None
    expected = math.prod(inp.shape)
    if arr.size != expected:
        raise RequestError(f"input {inp.name!r}: {arr.size} values do not fill shape "
                           f"{inp.shape} ({expected} values)")
    return arr.reshape(inp.shape)


def _compatible(datatype: str, kind: str) -> bool:
    if datatype == "BOOL":
        return kind == "b"
    if datatype.startswith(("INT", "UINT")):
        return kind in "iu"
    return kind in "iuf"  # FP*: integers are exact in JSON, take them


def _flatten(data: list) -> list:
    out: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def encode(name: str, value: Any) -> ResponseOutput:
    arr = np.asarray(value)
    datatype = datatype_of(arr.dtype)
    if datatype == "BYTES":
        data = [v.decode() if isinstance(v, bytes) else str(v) for v in arr.reshape(-1).tolist()]
    else:
        data = arr.reshape(-1).tolist()
    return ResponseOutput(name=name, shape=list(arr.shape), datatype=datatype, data=data)
