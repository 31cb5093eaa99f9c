"""Open Inference Protocol v2 (and KServe v1) bodies, and tensor decoding checked against the
model's signature. Every problem with a request becomes a :class:`RequestError` (a 4xx)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from raymlp.errors import RequestError

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



class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class RequestInput(_Body):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None  # None: the tensor travels binary (binary_data_size)


class RequestOutput(_Body):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(_Body):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(_Body):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferenceResponse(_Body):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
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
    instances: list[Any] | None = None
    inputs: list[Any] | dict[str, Any] | None = None


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


# --- the binary tensor data extension (Triton's, spoken by tritonclient and KServe) ----------
# A body of JSON followed by raw tensors; the JSON's length is in this header, and each binary
# tensor says its byte size in ``parameters.binary_data_size``.
BINARY_HEADER = "inference-header-content-length"


def split_binary(raw: bytes, header: str | None) -> tuple[bytes, bytes]:
    """The JSON part and the binary part of a request body."""
    if header is None:
        return raw, b""
    if not header.isdigit() or int(header) > len(raw):
        raise RequestError(f"header Inference-Header-Content-Length: {header!r} must be the "
                           f"byte length of the JSON part of the {len(raw)}-byte body")
    return raw[:int(header)], raw[int(header):]


def binary_parts(inputs: list[RequestInput], blob: bytes) -> list[bytes | None]:
    """Each input's binary bytes (None for JSON data), cut from ``blob`` in input order."""
    out: list[bytes | None] = []
    offset = 0
    for inp in inputs:
        size = (inp.parameters or {}).get("binary_data_size")
        if size is None:
            out.append(None)
            continue
        if not isinstance(size, int) or size < 0 or offset + size > len(blob):
            raise RequestError(f"input {inp.name!r}: binary_data_size {size!r} does not fit the "
                               f"{len(blob) - offset} binary bytes left")
        out.append(blob[offset:offset + size])
        offset += size
    if offset != len(blob):
        raise RequestError(f"{len(blob) - offset} binary bytes after the last input's data")
    return out


def _from_binary(inp: RequestInput, data: bytes) -> np.ndarray:
    if inp.datatype == "BYTES":  # each element: 4-byte little-endian length, then the bytes
        items, i = [], 0
        while i < len(data):
            if i + 4 > len(data):
                raise RequestError(f"input {inp.name!r}: truncated BYTES element")
            n = int.from_bytes(data[i:i + 4], "little")
            if i + 4 + n > len(data):
                raise RequestError(f"input {inp.name!r}: truncated BYTES element")
            try:
                items.append(data[i + 4:i + 4 + n].decode("utf-8"))
            except UnicodeDecodeError:
                raise RequestError(f"input {inp.name!r}: BYTES element is not UTF-8") from None
            i += 4 + n
        return np.asarray(items, dtype=object)
    dtype = DATATYPES[inp.datatype].newbyteorder("<")
    if len(data) % dtype.itemsize:
        raise RequestError(f"input {inp.name!r}: {len(data)} binary bytes are not a whole "
                           f"number of {inp.datatype} values")
    return np.frombuffer(data, dtype=dtype).astype(DATATYPES[inp.datatype])


def to_binary(value: np.ndarray) -> bytes:
    """A response tensor's bytes in the binary tensor data extension."""
    if datatype_of(value.dtype) == "BYTES":
        parts = []
        for v in value.reshape(-1).tolist():
            b = v if isinstance(v, bytes) else str(v).encode()
            parts.append(len(b).to_bytes(4, "little") + b)
        return b"".join(parts)
    return np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()


def decode(inp: RequestInput, spec: TensorMetadata | None,
           binary: bytes | None = None) -> np.ndarray:
    """One request tensor as a numpy array, checked against ``spec`` (datatype and shape);
    ``binary`` holds its bytes when it came in the binary extension."""
    if inp.datatype not in DATATYPES:
        raise RequestError(f"input {inp.name!r}: unknown datatype {inp.datatype!r}; "
                           f"allowed: {sorted(DATATYPES)}")
    if spec is not None and inp.datatype != spec.datatype:
        raise RequestError(f"input {inp.name!r}: datatype {inp.datatype} does not match the "
                           f"model's {spec.datatype}")
    if any(d < 0 for d in inp.shape):
        raise RequestError(f"input {inp.name!r}: shape {inp.shape} has a negative dimension")
    if spec is not None and (len(inp.shape) != len(spec.shape) or any(
            want != -1 and want != got for want, got in zip(spec.shape, inp.shape))):
        raise RequestError(f"input {inp.name!r}: shape {inp.shape} does not match the "
                           f"model's {spec.shape} (-1: any size)")
    if binary is not None:
        arr = _from_binary(inp, binary)
    elif inp.data is None:
        raise RequestError(f"input {inp.name!r} has neither 'data' nor binary data")
    else:
        arr = _from_json(inp)
    expected = math.prod(inp.shape)
    if arr.size != expected:
        raise RequestError(f"input {inp.name!r}: {arr.size} values do not fill shape "
                           f"{inp.shape} ({expected} values)")
    return arr.reshape(inp.shape)


def _from_json(inp: RequestInput) -> np.ndarray:
    try:
        if inp.datatype == "BYTES":
            arr = np.asarray(_flatten(inp.data), dtype=object)
            bad = [v for v in arr.tolist() if not isinstance(v, str)]
            if bad:
                raise RequestError(f"input {inp.name!r}: BYTES data must be strings, "
                                   f"got {bad[0]!r}")
            return arr
        raw = np.asarray(inp.data)
        if raw.dtype == object or raw.ndim > 1 and raw.dtype.kind not in "biuf":
            raw = np.asarray(_flatten(inp.data))
        kind = raw.dtype.kind
        if raw.size and not _compatible(inp.datatype, kind):
            raise RequestError(f"input {inp.name!r}: data of kind {raw.dtype.name} does not "
                               f"fit datatype {inp.datatype}")
        return raw.astype(DATATYPES[inp.datatype], copy=False).reshape(-1)
    except (ValueError, TypeError, OverflowError) as exc:
        raise RequestError(f"input {inp.name!r}: data cannot be read as {inp.datatype}: "
                           f"{exc}") from None


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


def encode(name: str, value: Any, binary: bool = False) -> tuple[ResponseOutput, bytes]:
    """A response tensor: JSON data, or (``binary``) its bytes beside the JSON."""
    arr = np.asarray(value)
    datatype = datatype_of(arr.dtype)
    if binary:
        blob = to_binary(arr)
        return ResponseOutput(name=name, shape=list(arr.shape), datatype=datatype,
                              parameters={"binary_data_size": len(blob)}), blob
    if datatype == "BYTES":
        data = [v.decode() if isinstance(v, bytes) else str(v) for v in arr.reshape(-1).tolist()]
    else:
        data = arr.reshape(-1).tolist()
    return ResponseOutput(name=name, shape=list(arr.shape), datatype=datatype, data=data), b""
