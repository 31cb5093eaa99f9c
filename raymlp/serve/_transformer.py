"""Transformers: user pre- and post-processing around the model, run inside every replica.

KServe runs a transformer as a separate service, one more network hop per request; here it runs
in the replica that holds the model, on the same request, so it costs only its own work. The
user's class travels to the replicas pickled by value (their own module need not be installed
there) inside the service state.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
from typing import Any

import numpy as np

from raymlp._spec import fail
from raymlp._util import load_object
from raymlp.serve._protocol import DATATYPES, REJECTED, RequestError, TensorMetadata

FIELD = "InferenceService.transformer"


class Transformer:
    """Base class for a service's pre- and post-processing; override either method.

    ``preprocess`` gets the request's tensors by name (numpy arrays; BYTES as object arrays of
    str) and returns what the model takes: an array, a dict of named arrays, or a DataFrame.
    ``postprocess`` gets the model's outputs by name and returns named arrays (a dict) or one
    array. Either may be ``async``. Raising ``ValueError`` (or ``TypeError``, ``KeyError``,
    ``IndexError``) answers the client 400 with the message; anything else is a 500.

    The class attributes ``inputs`` and ``outputs`` (lists of ``(name, datatype, shape)``, -1
    for any size) describe the request and response tensors when they differ from the model's:
    the service checks requests against them and publishes them as its v2 metadata.

    The instance is built once per replica with no arguments (a class) or pickled with its state
    (an instance); load heavy resources (vocabularies, scalers) in ``__init__``.

    Example:
        >>> class Scale(Transformer):
        ...     inputs = [("raw", "FP64", [-1, 4])]
        ...     outputs = [("label", "BYTES", [-1])]
        ...     def preprocess(self, inputs):
        ...         return ((inputs["raw"] - MEAN) / STD).astype("float32")
        ...     def postprocess(self, outputs):
        ...         return np.asarray(LABELS)[outputs["output-0"]]
    """

    inputs: list[tuple[str, str, list[int]]] | None = None
    outputs: list[tuple[str, str, list[int]]] | None = None

    def preprocess(self, inputs: dict[str, np.ndarray]) -> Any:
        return inputs

    def postprocess(self, outputs: dict[str, np.ndarray]) -> Any:
        return outputs


def _tensors(cls: Any, attr: str) -> list[TensorMetadata] | None:
    raw = getattr(cls, attr, None)
    if raw is None:
        return None
    field = f"{FIELD}.{attr}"
    out = []
    for item in raw if isinstance(raw, (list, tuple)) else [raw]:
        try:
            name, datatype, shape = item
            shape = [int(d) for d in shape]
        except (TypeError, ValueError):
            raise fail(field, raw, "a list of (name, datatype, shape)") from None
        if datatype not in DATATYPES:
            raise fail(field, datatype, f"a datatype in {sorted(DATATYPES)} (tensor {name!r})")
        out.append(TensorMetadata(name=str(name), datatype=datatype, shape=shape))
    return out


def check_value(value: Any) -> Any:
    """Check a transformer as a spec value, importing nothing: a well-formed reference
    (``"module:Class"`` / ``"path/file.py:Class"``), or a class or instance with a
    ``preprocess`` and/or ``postprocess`` method, constructible without arguments when a class,
    declaring well-formed tensors."""
    if isinstance(value, str):
        target, sep, attr = value.rpartition(":")
        if not sep or not target.strip() or not attr.strip():
            raise fail(FIELD, value, "a class, an instance, or 'module:Class' / "
                                     "'path/file.py:Class'")
        return value
    cls = value if inspect.isclass(value) else type(value)
    if not any(callable(getattr(cls, m, None)) for m in ("preprocess", "postprocess")):
        raise fail(FIELD, value, "a class or instance with a preprocess and/or postprocess "
                                 "method")
    if inspect.isclass(value):
        required = [p.name for p in inspect.signature(value).parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY,
                                                           p.POSITIONAL_OR_KEYWORD,
                                                           p.KEYWORD_ONLY)]
        if required:
            raise fail(FIELD, value, f"constructible without arguments (it needs {required}); "
                                     "pass an instance instead")
    _tensors(cls, "inputs")
    _tensors(cls, "outputs")
    return value


def resolve(value: Any) -> Any:
    """The transformer class or instance ``value`` names (a reference is imported here, at
    deploy), checked as :func:`check_value` does."""
    return check_value(load_object(value, field=FIELD))


def describe(value: Any) -> str:
    """``module:Class`` of a transformer class or instance (a reference as it is)."""
    if isinstance(value, str):
        return value
    cls = value if inspect.isclass(value) else type(value)
    return f"{cls.__module__}:{cls.__qualname__}"


def pack(value: Any) -> dict:
    """The transformer as JSON-safe service state: its name and a by-value pickle (imports a
    reference first)."""
    from ray import cloudpickle

    from raymlp._pickling import ship_by_value

    value = resolve(value)
    ship_by_value(value)
    try:
        blob = cloudpickle.dumps(value)
    except Exception as exc:  # the pickler raises many kinds of errors
        raise fail(FIELD, describe(value), f"picklable, to send it to the replicas ({exc})") \
            from exc
    return {"name": describe(value), "sha256": hashlib.sha256(blob).hexdigest(),
            "pickle": base64.b64encode(blob).decode()}


class Loaded:
    """A transformer as a replica runs it."""

    def __init__(self, state: dict):
        from ray import cloudpickle

        value = cloudpickle.loads(base64.b64decode(state["pickle"]))
        self.name = state["name"]
        self.sha256 = state["sha256"]
        self.instance = value() if inspect.isclass(value) else value
        cls = type(self.instance)
        self.inputs = _tensors(cls, "inputs")
        self.outputs = _tensors(cls, "outputs")
        self._pre = getattr(self.instance, "preprocess", None)
        self._post = getattr(self.instance, "postprocess", None)

    async def preprocess(self, tensors: dict[str, np.ndarray]) -> Any:
        return await self._call(self._pre, "preprocess", tensors)

    async def postprocess(self, outputs: dict[str, np.ndarray]) -> Any:
        return await self._call(self._post, "postprocess", outputs)

    async def _call(self, method: Any, what: str, arg: Any) -> Any:
        if method is None:
            return arg
        try:
            out = method(arg)
            if inspect.isawaitable(out):
                out = await out
            return out
        except REJECTED as exc:
            raise RequestError(f"the transformer's {what} rejected the input: {exc}") from None
        except Exception as exc:  # the transformer's bug, not the client's: a 500
            raise RequestError(f"the transformer's {what} failed: {type(exc).__name__}: {exc}",
                               500) from exc
