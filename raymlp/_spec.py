"""The one spec layer every capability's specs use.

A spec is a frozen, keyword-only dataclass whose ``__post_init__`` checks values with the
functions here, so the same bad value gets the same :class:`~raymlp.errors.SpecError`
(``field``, ``value``, ``allowed``) from a training job, a service or a cluster spec:

- numbers: ``bool`` is never a number; NaN and infinities are never allowed; an integer field
  takes an ``int`` only (``2.0`` is not an integer); bounds are inclusive unless ``strict``;
- choices list every allowed value; names follow the DNS-label rule (Kubernetes, Serve routes);
- nothing here imports user code or touches a cluster: a spec can be built, compared, hashed
  and written to YAML anywhere (checks that need the runtime run when the spec is run).

:func:`from_data` builds a spec from plain data (a YAML/JSON file, ``--set`` overrides),
rejecting unknown fields and ill-typed values with the same errors; :func:`to_data` is its
inverse; :func:`json_schema` gives the JSON Schema that editors validate job files with
(pydantic generates it from the dataclass annotations).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from raymlp.errors import SpecError

__all__ = [
    "boolean",
    "choice",
    "fail",
    "from_data",
    "instance",
    "integer",
    "json_schema",
    "mapping",
    "name",
    "number",
    "number_text",
    "string",
    "to_data",
]

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def fail(field: str, value: Any, allowed: str, *, error: type[SpecError] = SpecError) -> SpecError:
    """The error for ``field`` holding ``value`` where ``allowed`` was expected (raise it)."""
    short = field.rsplit(".", 1)[-1]
    return error(f"{field} must be {allowed}, got {short}={value!r}", field=field, value=value,
                 allowed=allowed)


def _bounds(minimum: float | None, maximum: float | None, strict: bool) -> str:
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if strict else '>='} {minimum:g}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}")
    return " and ".join(parts)


def number(field: str, value: Any, *, minimum: float | None = None,
           maximum: float | None = None, strict: bool = False, optional: bool = False,
           integer: bool = False) -> Any:
    """Check a finite number (an ``int`` when ``integer``) within the bounds; returns it.

    ``strict`` makes the minimum exclusive; ``optional`` lets None through.
    """
    if value is None and optional:
        return None
    kind = "an integer" if integer else "a number"
    allowed = f"{kind} {_bounds(minimum, maximum, strict)}".strip()
    if optional:
        allowed = f"None or {allowed}"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise fail(field, value, allowed)
    if not math.isfinite(value):
        raise fail(field, value, allowed)
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise fail(field, value, allowed)
    if maximum is not None and value > maximum:
        raise fail(field, value, allowed)
    return value


def number_text(field: str, value: Any, *, integer: bool = False, optional: bool = False) -> Any:
    """:func:`number` of a number or of a string holding one (``"0.01"``, ``"3"``), as files
    written for Kubernetes (Katib's ``feasibleSpace``, settings) give them; returns the number."""
    if isinstance(value, str):
        try:
            value = (int if integer else float)(value.strip())
        except ValueError:
            raise fail(field, value, "an integer" if integer else "a number") from None
    return number(field, value, optional=optional, integer=integer)


def integer(field: str, value: Any, *, minimum: int | None = None, maximum: int | None = None,
            optional: bool = False) -> Any:
    """Check an ``int`` (never a bool or a float) within the bounds; returns it."""
    return number(field, value, minimum=minimum, maximum=maximum, optional=optional, integer=True)


def choice(field: str, value: Any, choices: Iterable[Any], *, optional: bool = False) -> Any:
    """Check that ``value`` is one of ``choices``; the error lists them all."""
    choices = list(choices)
    if value is None and optional:
        return None
    try:
        ok = value in choices and not isinstance(value, bool)
    except TypeError:  # unhashable
        ok = False
    if not ok:
        raise fail(field, value, f"{'None or ' if optional else ''}one of {choices}")
    return value


def string(field: str, value: Any, *, optional: bool = False, pattern: str | re.Pattern | None = None,
           max_length: int | None = None, allowed: str | None = None) -> Any:
    """Check a non-empty string (matching ``pattern``, at most ``max_length`` long)."""
    if value is None and optional:
        return None
    what = allowed or "a non-empty string"
    if max_length is not None and not allowed:
        what += f" of at most {max_length} characters"
    if optional:
        what = f"None or {what}"
    if not isinstance(value, str) or not value.strip():
        raise fail(field, value, what)
    if max_length is not None and len(value) > max_length:
        raise fail(field, value, what)
    if pattern is not None and not re.fullmatch(pattern, value):
        raise fail(field, value, what)
    return value


def name(field: str, value: Any, *, max_length: int = 63, optional: bool = False) -> Any:
    """Check a DNS label: lowercase letters, digits and '-', starting and ending alphanumeric."""
    return string(field, value, optional=optional, pattern=DNS_LABEL, max_length=max_length,
                  allowed=("a DNS label (lowercase letters, digits and '-', starting and ending "
                           f"with a letter or digit, 1-{max_length} characters)"))


def boolean(field: str, value: Any) -> bool:
    """Check ``True`` or ``False`` (not 0, 1 or "yes")."""
    if not isinstance(value, bool):
        raise fail(field, value, "True or False")
    return value


def mapping(field: str, value: Any, *, values: Callable[[str, Any], Any] | None = None,
            optional: bool = False) -> Any:
    """Check a mapping with string keys; ``values(field_of_entry, v)`` checks each value."""
    if value is None and optional:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k for k in value):
        raise fail(field, value, f"{'None or ' if optional else ''}a mapping with string keys")
    if values is not None:
        for key, item in value.items():
            values(f"{field}[{key!r}]", item)
    return value


def instance(field: str, value: Any, kind: type | tuple[type, ...], *, what: str | None = None,
             optional: bool = False) -> Any:
    """Check ``isinstance(value, kind)``; ``what`` names the kind in the error."""
    if value is None and optional:
        return None
    if not isinstance(value, kind):
        names = what or " or ".join(
            k.__module__.replace("._spec", "").replace("._specs", "") + "." + k.__qualname__
            for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise fail(field, value, f"{'None or ' if optional else ''}{names}")
    return value


# --- plain data <-> specs ----------------------------------------------------------------------

def _owner(cls: type) -> str:
    return cls.__name__


def _spec_classes(hint: Any) -> list[type]:
    """The spec dataclasses a field's annotation allows (``X``, ``X | None``, ``X | Y``)."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return [hint]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a) and isinstance(a, type)]
    return []


def _hints(cls: type) -> dict[str, Any]:
    import sys

    module = sys.modules.get(cls.__module__)
    return typing.get_type_hints(cls, globalns=vars(module) if module else None)


def from_data(cls: type, data: Any, *, field: str | None = None,
              convert: Mapping[str, Callable[[Any], Any]] | None = None) -> Any:
    """Build spec ``cls`` from plain data: nested mappings become the nested specs.

    Unknown fields, a non-mapping where a spec belongs, and a value pydantic cannot read as the
    field's type are :class:`SpecError` naming the field; the spec's own checks do the rest.

    Args:
        cls: a spec dataclass.
        data: a mapping of its field names to plain values.
        field: the dotted name ``data`` sits at (default: the class name).
        convert: per-field functions applied to plain values first (e.g. ``"loop"`` ->
            :func:`raymlp._util.load_object`), keyed by field name at this level.
    """
    owner = field or _owner(cls)
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise fail(owner, data, f"a mapping of {cls.__name__} fields")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise SpecError(f"{owner}: unknown field {unknown[0]!r}; allowed: {sorted(fields)}",
                        field=f"{owner}.{unknown[0]}", value=data[unknown[0]],
                        allowed=f"one of {sorted(fields)}")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        sub = f"{owner}.{key}"
        if convert and key in convert and value is not None:
            kwargs[key] = convert[key](value)
            continue
        nested = _spec_classes(hints.get(key))
        if nested and isinstance(value, Mapping):
            kwargs[key] = from_data(nested[0], value, field=sub)
        elif nested and value is not None and not isinstance(value, tuple(nested)):
            raise fail(sub, value, f"a mapping of {nested[0].__name__} fields")
        else:
            kwargs[key] = _typed(sub, hints.get(key), value)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        missing = [f for f, d in fields.items() if f not in kwargs
                   and d.default is dataclasses.MISSING and d.default_factory is dataclasses.MISSING]
        raise SpecError(f"{owner}: missing required field(s) {missing}", field=owner,
                        value=dict(data), allowed=f"fields {sorted(fields)}") from exc


def _typed(field: str, hint: Any, value: Any) -> Any:
    """Let pydantic check ``value`` against a plain annotation (specs keep their own checks)."""
    if hint is None or value is None:
        return value
    adapter = _adapter(hint)
    if adapter is None:
        return value
    import pydantic

    try:
        adapter.validate_python(value, strict=True)
    except pydantic.ValidationError:
        raise fail(field, value, _describe(hint)) from None
    return value


_ADAPTERS: dict[Any, Any] = {}


def _adapter(hint: Any):
    """A pydantic TypeAdapter for annotations made of plain types only (else None)."""
    if hint in _ADAPTERS:
        return _ADAPTERS[hint]
    import pydantic

    adapter = None
    if _plain(hint):
        try:
            adapter = pydantic.TypeAdapter(hint)
        except Exception:  # an annotation pydantic cannot read: leave it to the spec's checks
            adapter = None
    _ADAPTERS[hint] = adapter
    return adapter


_PLAIN = (str, int, float, bool, type(None), Any)


def _plain(hint: Any) -> bool:
    if hint in _PLAIN:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType, list, tuple, dict, typing.Literal):
        return origin is typing.Literal or all(_plain(a) for a in typing.get_args(hint) if a is not ...)
    if origin in (Mapping, typing.Mapping, Iterable) or hint in (dict, list):
        return all(_plain(a) for a in typing.get_args(hint))
    import collections.abc

    if origin in (collections.abc.Mapping, collections.abc.Sequence):
        return all(_plain(a) for a in typing.get_args(hint))
    return False


def _describe(hint: Any) -> str:
    text = str(hint).replace("typing.", "").replace("collections.abc.", "")
    return {"<class 'int'>": "an integer", "<class 'float'>": "a number",
            "<class 'str'>": "a string", "<class 'bool'>": "True or False"}.get(text, f"of type {text}")


def to_data(spec: Any, *, convert: Mapping[str, Callable[[Any], Any]] | None = None) -> Any:
    """A spec as plain data (nested specs as mappings) that :func:`from_data` reads back.

    ``convert`` turns non-plain field values into plain ones (e.g. a loop into
    ``"module:function"``), keyed by field name at the top level.
    """
    if not dataclasses.is_dataclass(spec):
        return spec
    out = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if convert and f.name in convert and value is not None:
            value = convert[f.name](value)
        elif dataclasses.is_dataclass(value):
            value = to_data(value)
        elif isinstance(value, Mapping):
            value = {k: to_data(v) for k, v in value.items()}
        elif isinstance(value, tuple):
            value = [to_data(v) for v in value]
        out[f.name] = value
    return out


def json_schema(cls: type, *, title: str | None = None) -> dict[str, Any]:
    """The JSON Schema of spec ``cls`` as plain data (what :func:`from_data` accepts).

    Callables and user objects appear as strings (``"module:attr"`` references), which is how
    job files name them.
    """
    import pydantic
    from pydantic.json_schema import GenerateJsonSchema

    class _Schema(GenerateJsonSchema):
        def callable_schema(self, schema):
            return {"type": "string", "description": "a reference: 'module:attr' or 'path/file.py:attr'"}

        def is_instance_schema(self, schema):
            return {"type": "string", "description": "a reference: 'module:attr' or 'path/file.py:attr'"}

        def any_schema(self, schema):
            return {}

    _allow_arbitrary_types(cls)
    adapter = pydantic.TypeAdapter(cls)
    schema = adapter.json_schema(schema_generator=_Schema, mode="validation")
    _forbid_extra(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    if title:
        schema["title"] = title
    return schema


def _allow_arbitrary_types(cls: type, seen: set | None = None) -> None:
    """Let pydantic read user-object fields (a Backend, a transformer) of ``cls`` and its nested
    specs, through the ``__pydantic_config__`` hook pydantic reads on stdlib dataclasses."""
    import pydantic

    seen = seen if seen is not None else set()
    if cls in seen:
        return
    seen.add(cls)
    if "__pydantic_config__" not in vars(cls):
        cls.__pydantic_config__ = pydantic.ConfigDict(arbitrary_types_allowed=True)
    for hint in _hints(cls).values():
        for nested in _spec_classes(hint):
            _allow_arbitrary_types(nested, seen)


def _forbid_extra(node: Any) -> None:
    """Specs reject unknown fields: say so in every object of the schema."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _forbid_extra(value)
    elif isinstance(node, list):
        for value in node:
            _forbid_extra(value)
