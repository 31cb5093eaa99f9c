"""Layer 1 of manifest validation: the KubeRay CRDs' ``openAPIV3Schema``, as the API server
applies it.

Nulls on non-nullable fields are dropped, ``default`` values filled in, then the structural
schema is checked (types, required, enums, patterns, ``nullable``, ``x-kubernetes-int-or-string``,
``x-kubernetes-preserve-unknown-fields``, ``x-kubernetes-embedded-resource``, list types
``set``/``map`` uniqueness, int32/int64 ranges) and the CRDs' CEL rules
(``x-kubernetes-validations``) that do not compare with the stored object. ``jsonschema``
(Draft 7) does the core checking; this module only translates the Kubernetes extensions into
plain JSON Schema. Unlike the API server, which silently prunes unknown fields, an unknown field
is reported: it is almost always a typo (``replica:`` for ``replicas:``) that would be lost.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema
import yaml

from raymlp.cluster._crds import KINDS, load_schema

__all__ = ["API_VERSION", "ValidationIssue", "apply_defaults", "is_ray_resource", "schema_issues"]

API_VERSION = "ray.io/v1"
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


@dataclasses.dataclass(frozen=True)
class ValidationIssue:
    """One problem found in a manifest.

    Attributes:
        path: where in the manifest, e.g. ``spec.workerGroupSpecs[0].replicas`` (``""`` = root).
        message: what is wrong and what is allowed.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"


def is_ray_resource(doc: Any) -> bool:
    """Whether ``doc`` is a ``ray.io`` RayCluster, RayJob or RayService."""
    return (
        isinstance(doc, Mapping)
        and str(doc.get("apiVersion", "")).startswith("ray.io/")
        and doc.get("kind") in KINDS
    )


def schema_issues(kind: str, doc: Mapping[str, Any]) -> list[ValidationIssue]:
    """Every schema issue of a defaulted document (:func:`apply_defaults`): structure and types,
    list uniqueness, then the CEL rules."""
    schema = load_schema(kind)
    issues = _structural_issues(kind, doc)
    issues += _list_type_issues(schema, doc, [])
    issues += _cel_issues(schema, doc, [])
    return issues


def apply_defaults(kind: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``manifest`` with nulls pruned and the CRD's defaults filled in.

    This is what the API server stores: ``null`` on a field that is not ``nullable`` is
    dropped, then every ``default`` whose parent object exists is set.
    """
    doc = copy.deepcopy(dict(manifest))
    _default(load_schema(kind), doc)
    return doc


def _default(schema: Mapping[str, Any], value: Any) -> None:
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for name in list(value):
            sub = props.get(name)
            if value[name] is None and sub is not None and not sub.get("nullable"):
                del value[name]
        for name, sub in props.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
        for name, item in value.items():
            if name in props:
                _default(props[name], item)
            elif isinstance(schema.get("additionalProperties"), dict):
                _default(schema["additionalProperties"], item)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default(schema["items"], item)


@functools.cache
def _validator(kind: str) -> jsonschema.Draft7Validator:
    checker = jsonschema.FormatChecker(formats=())
    for fmt, (low, high) in _INT_RANGES.items():
        checker.checks(fmt)(
            functools.partial(
                lambda v, lo, hi: not isinstance(v, int) or isinstance(v, bool) or lo <= v <= hi,
                lo=low,
                hi=high,
            )
        )
    return jsonschema.Draft7Validator(_to_json_schema(load_schema(kind)), format_checker=checker)


def _to_json_schema(node: Mapping[str, Any], *, embedded: bool = False) -> dict[str, Any]:
    """Translate one structural-schema node into plain Draft 7 JSON Schema."""
    out: dict[str, Any] = {}
    for key, val in node.items():
        if key == "properties":
            out[key] = {name: _to_json_schema(sub) for name, sub in val.items()}
        elif key == "items" and isinstance(val, Mapping) or key == "additionalProperties" and isinstance(val, Mapping):
            out[key] = _to_json_schema(val)
        elif key in ("anyOf", "allOf", "oneOf"):
            # Inside an int-or-string node these only constrain one branch; keep them loose.
            out[key] = [_to_json_schema(v) for v in val]
        elif key == "not" and isinstance(val, Mapping):
            out[key] = _to_json_schema(val)
        elif key.startswith("x-kubernetes-") or key in ("nullable", "default", "description"):
            continue
        else:
            out[key] = val
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.pop("anyOf", None)
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    if node.get("x-kubernetes-embedded-resource"):
        embedded = True
    if (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        props = dict(out["properties"])
        if embedded:
            # An embedded resource always carries its own type and object metadata.
            for name in ("apiVersion", "kind"):
                props.setdefault(name, {"type": "string"})
            props.setdefault("metadata", {"type": "object"})
            out["properties"] = props
        out["additionalProperties"] = False
    return out


def _fmt_path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _structural_issues(kind: str, doc: Mapping[str, Any]) -> list[ValidationIssue]:
    issues = []
    for err in _validator(kind).iter_errors(doc):
        path = list(err.absolute_path)
        schema = err.schema if isinstance(err.schema, Mapping) else {}
        if err.validator == "additionalProperties":
            allowed = sorted(schema.get("properties", {}))
            extra = sorted(set(err.instance) - set(allowed))
            for name in extra:
                issues.append(
                    ValidationIssue(
                        _fmt_path([*path, name]),
                        f"unknown field {name!r}; allowed fields here: {', '.join(allowed)}",
                    )
                )
            continue
        if err.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", err.message)
            name = missing[0] if missing else "?"
            issues.append(
                ValidationIssue(_fmt_path([*path, name]), "required field is missing")
            )
            continue
        where = _fmt_path(path)
        got = err.instance
        if err.validator == "type":
            want = err.validator_value
            want = " or ".join(want) if isinstance(want, list) else want
            msg = f"must be of type {want}, got {_type_name(got)} {got!r}"
            if _type_name(got) in ("integer", "number", "boolean") and want == "string":
                msg += f" (quote it: \"{got}\")" if not isinstance(got, bool) else (
                    f' (quote it: "{str(got).lower()}")'
                )
        elif err.validator == "enum":
            msg = f"must be one of {err.validator_value}, got {got!r}"
        elif err.validator == "format":
            low, high = _INT_RANGES.get(err.validator_value, (None, None))
            msg = f"must be a {err.validator_value} ({low}..{high}), got {got!r}"
        elif err.validator in ("minimum", "maximum"):
            op = ">=" if err.validator == "minimum" else "<="
            msg = f"must be {op} {err.validator_value}, got {got!r}"
        elif err.validator in ("maxLength", "minLength"):
            op = "at most" if err.validator == "maxLength" else "at least"
            msg = f"must be {op} {err.validator_value} characters long, got {len(got)}"
        elif err.validator == "pattern":
            msg = f"must match the pattern {err.validator_value!r}, got {got!r}"
        elif err.validator in ("maxItems", "minItems"):
            op = "at most" if err.validator == "maxItems" else "at least"
            msg = f"must have {op} {err.validator_value} items, got {len(got)}"
        else:
            msg = f"{err.message} (rule {err.validator!r})"
        issues.append(ValidationIssue(where, msg))
    return sorted(issues, key=lambda i: i.path)


def _list_type_issues(schema: Mapping[str, Any], value: Any, path: list[Any]) -> list[ValidationIssue]:
    """``x-kubernetes-list-type`` ``set`` / ``map`` uniqueness, which JSON Schema cannot say."""
    issues: list[ValidationIssue] = []
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            sub = props.get(name) or (extra if isinstance(extra, Mapping) else None)
            if sub:
                issues += _list_type_issues(sub, item, [*path, name])
    elif isinstance(value, list):
        list_type = schema.get("x-kubernetes-list-type")
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen: dict[Any, int] = {}
        for i, item in enumerate(value):
            if list_type == "set":
                ident: Any = yaml.safe_dump(item, sort_keys=True)
            elif list_type == "map" and isinstance(item, dict):
                ident = tuple(item.get(k) for k in keys)
            else:
                ident = None
            if ident is not None:
                if ident in seen:
                    what = "value" if list_type == "set" else f"key {dict(zip(keys, ident))}"
                    issues.append(
                        ValidationIssue(
                            _fmt_path([*path, i]),
                            f"duplicate {what} (also at index {seen[ident]}); "
                            f"this list allows each {'value' if list_type == 'set' else 'key'} once",
                        )
                    )
                seen.setdefault(ident, i)
            if isinstance(schema.get("items"), Mapping):
                issues += _list_type_issues(schema["items"], item, [*path, i])
    return issues


# --- CEL rules (x-kubernetes-validations) -------------------------------------------------------
# The KubeRay CRDs carry a handful of CEL rules built from has(), !, &&, || and `self in [...]`;
# they are translated token by token into a Python expression over the object. Transition rules
# (those that read `oldSelf`) need the stored object and are left to the API server, as is any
# rule using other CEL syntax.

_CEL_TOKEN = re.compile(
    r"\s*(?:(?P<has>has\(self\.(?P<field>[A-Za-z_][A-Za-z0-9_]*)\))|(?P<op>&&|\|\||!|\(|\)|\[|\]|,)"
    r"|(?P<self>self\b)|(?P<in>in\b)|(?P<str>'[^'\\]*'))"
)


@functools.cache
def _cel_to_python(rule: str) -> str | None:
    out, pos = [], 0
    while pos < len(rule):
        if rule[pos:].strip() == "":
            break
        match = _CEL_TOKEN.match(rule, pos)
        if match is None:
            return None
        pos = match.end()
        if match.group("has"):
            out.append(f"({match.group('field')!r} in obj)")
        elif match.group("op"):
            out.append({"&&": " and ", "||": " or ", "!": " not "}.get(match.group("op"), match.group("op")))
        elif match.group("self"):
            out.append("obj")
        elif match.group("in"):
            out.append(" in ")
        else:
            out.append(match.group("str"))
    return "".join(out)


def _cel_holds(rule: str, value: Any) -> bool | None:
    """Whether ``rule`` holds for ``value``; None when it is not a rule this subset covers."""
    if "oldSelf" in rule:
        return None
    expr = _cel_to_python(rule)
    if expr is None:
        return None
    if " in obj" in expr and not isinstance(value, Mapping):
        return None
    # Only the tokens above reach eval: names, literals, and/or/not, `in` and brackets.
    return bool(eval(expr, {"__builtins__": {}}, {"obj": value}))


def _cel_issues(schema: Mapping[str, Any], value: Any, path: list[Any]) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    for rule in schema.get("x-kubernetes-validations") or ():
        if _cel_holds(rule.get("rule", ""), value) is False:
            issues.append(ValidationIssue(_fmt_path(path), rule.get("message") or f"must satisfy {rule['rule']}"))
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            sub = props.get(name) or (extra if isinstance(extra, Mapping) else None)
            if sub:
                issues += _cel_issues(sub, item, [*path, name])
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            issues += _cel_issues(schema["items"], item, [*path, i])
    return issues
