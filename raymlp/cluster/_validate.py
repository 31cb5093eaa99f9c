"""Validation of KubeRay ``ray.io/v1`` manifests before anything is sent to a cluster.

Two layers, in the order the API server and then the operator apply them:

1. **The CRD's openAPIV3Schema**, as the API server does it: nulls on non-nullable fields are
   dropped, ``default`` values filled in, then the structural schema checked (types, required,
   enums, patterns, ``nullable``, ``x-kubernetes-int-or-string``,
   ``x-kubernetes-preserve-unknown-fields``, ``x-kubernetes-embedded-resource``, list types
   ``set``/``map`` uniqueness, int32/int64 ranges). ``jsonschema`` (Draft 7) does the core
   checking; this module only translates the Kubernetes extensions into plain JSON Schema.
   Unlike the API server, which silently prunes unknown fields, an unknown field is reported:
   it is almost always a typo (``replica:`` for ``replicas:``) that would be lost.
2. **The operator's cross-field rules** (KubeRay v1.7.0 ``utils/validation.go`` and the
   RayCluster webhook): name lengths, exactly one of ``rayClusterSpec``/``clusterSelector``,
   TTL only with ``shutdownAfterJobFinishes``, ``minReplicas <= replicas <= maxReplicas``, ...

Every issue carries the path in the manifest (``spec.rayClusterSpec.workerGroupSpecs[0].replicas``)
and says what is allowed. Rules guarded by operator feature gates (deletion strategies,
incremental upgrades, worker-group suspension) are accepted, since the gates are a property of
the installed operator, not of the manifest.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from typing import Any, Iterable, Mapping

import jsonschema
import yaml

from raymlp.cluster._crds import KINDS, load_schema

__all__ = ["ValidationIssue", "validate_manifest", "is_ray_resource", "apply_defaults"]

API_VERSION = "ray.io/v1"
# 63-character DNS label minus the longest suffix the operator appends ("-serve-svc") = 53;
# RayJob/RayService names get 6 more characters appended for the generated cluster name.
MAX_NAME_LENGTH = {"RayCluster": 53, "RayJob": 47, "RayService": 47}
SUBMISSION_MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
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


def validate_manifest(manifest: Mapping[str, Any]) -> list[ValidationIssue]:
    """Validate one ``ray.io/v1`` manifest; returns the issues found (empty when valid).

    Args:
        manifest: a parsed RayCluster, RayJob or RayService document.

    Returns:
        The issues, schema issues first, each naming its path and what is allowed.

    Example:
        >>> validate_manifest({"apiVersion": "ray.io/v1", "kind": "RayJob",
        ...                    "metadata": {"name": "j"}, "spec": {"entrypoint": "x"}})[0].message
        'one of spec.rayClusterSpec or spec.clusterSelector must be set'
    """
    if not isinstance(manifest, Mapping):
        return [ValidationIssue("", f"a manifest must be a mapping, got {type(manifest).__name__}")]
    kind = manifest.get("kind")
    if kind not in KINDS:
        return [ValidationIssue("kind", f"must be one of {sorted(KINDS)}, got {kind!r}")]
    if manifest.get("apiVersion") != API_VERSION:
        return [
            ValidationIssue(
                "apiVersion", f"must be {API_VERSION!r}, got {manifest.get('apiVersion')!r}"
            )
        ]
    doc = apply_defaults(kind, manifest)
    issues = _schema_issues(kind, doc)
    issues += _list_type_issues(load_schema(kind), doc, [])
    if not issues:
        # Cross-field rules assume the structure the schema guarantees.
        issues += _CROSS_FIELD[kind](doc)
    return _metadata_issues(kind, doc.get("metadata")) + issues


# ---------------------------------------------------------------------------------------------
# Layer 1: the structural schema, as the API server applies it


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


@functools.lru_cache(maxsize=None)
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
        elif key == "items" and isinstance(val, Mapping):
            out[key] = _to_json_schema(val)
        elif key == "additionalProperties" and isinstance(val, Mapping):
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


def _schema_issues(kind: str, doc: Mapping[str, Any]) -> list[ValidationIssue]:
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


# ---------------------------------------------------------------------------------------------
# Layer 2: the operator's cross-field rules


def _metadata_issues(kind: str, meta: Any) -> list[ValidationIssue]:
    if not isinstance(meta, Mapping):
        return [ValidationIssue("metadata", "required: an object with at least a name")]
    name = meta.get("name")
    if not name and meta.get("generateName"):
        return []
    if not isinstance(name, str) or not name:
        return [ValidationIssue("metadata.name", "required: a DNS-1035 label")]
    issues = []
    limit = MAX_NAME_LENGTH[kind]
    if len(name) > limit:
        issues.append(
            ValidationIssue(
                "metadata.name",
                f"a {kind} name must be at most {limit} characters, got {len(name)} ({name!r})",
            )
        )
    if not _DNS1035.match(name):
        issues.append(
            ValidationIssue(
                "metadata.name",
                "must be a DNS-1035 label: lower-case letters, digits and '-', starting with a "
                f"letter and ending with a letter or digit; got {name!r}",
            )
        )
    return issues


def _env_names(container: Mapping[str, Any]) -> dict[str, Any]:
    return {e.get("name"): e.get("value") for e in container.get("env") or []}


def _autoscaling(spec: Mapping[str, Any]) -> bool:
    return bool(spec.get("enableInTreeAutoscaling"))


def _cluster_spec_issues(spec: Mapping[str, Any], base: str, annotations: Mapping[str, Any]) -> list[ValidationIssue]:
    issues = []
    head = spec.get("headGroupSpec") or {}
    head_containers = ((head.get("template") or {}).get("spec") or {}).get("containers") or []
    if not head_containers:
        issues.append(
            ValidationIssue(f"{base}.headGroupSpec.template.spec.containers", "needs at least one container")
        )
        return issues
    head_env = _env_names(head_containers[0])
    params = head.get("rayStartParams") or {}
    gcs = spec.get("gcsFaultToleranceOptions")
    if annotations.get("ray.io/ft-enabled") and gcs is not None:
        issues.append(
            ValidationIssue(
                f"{base}.gcsFaultToleranceOptions",
                "the ray.io/ft-enabled annotation and gcsFaultToleranceOptions are both set; "
                "use only gcsFaultToleranceOptions",
            )
        )
    ft_enabled = gcs is not None or str(annotations.get("ray.io/ft-enabled", "")).lower() == "true"
    if not ft_enabled and "RAY_REDIS_ADDRESS" in head_env:
        issues.append(
            ValidationIssue(
                f"{base}.headGroupSpec.template.spec.containers[0].env",
                "RAY_REDIS_ADDRESS implicitly enables GCS fault tolerance; set "
                "gcsFaultToleranceOptions instead",
            )
        )
    if gcs is not None:
        for env_name, field in (("REDIS_PASSWORD", "redisPassword"), ("RAY_REDIS_ADDRESS", "redisAddress")):
            if env_name in head_env:
                issues.append(
                    ValidationIssue(
                        f"{base}.headGroupSpec.template.spec.containers[0].env",
                        f"{env_name} must not be set with gcsFaultToleranceOptions; use "
                        f"gcsFaultToleranceOptions.{field}",
                    )
                )
        if params.get("redis-password"):
            issues.append(
                ValidationIssue(
                    f"{base}.headGroupSpec.rayStartParams.redis-password",
                    "not allowed with gcsFaultToleranceOptions; use gcsFaultToleranceOptions.redisPassword",
                )
            )
        if annotations.get("ray.io/external-storage-namespace"):
            issues.append(
                ValidationIssue(
                    "metadata.annotations.ray.io/external-storage-namespace",
                    "not allowed with gcsFaultToleranceOptions; use "
                    "gcsFaultToleranceOptions.externalStorageNamespace",
                )
            )
    if params.get("redis-username") or "REDIS_USERNAME" in head_env:
        issues.append(
            ValidationIssue(
                f"{base}.headGroupSpec",
                "a redis username in rayStartParams or REDIS_USERNAME is not allowed; use "
                "gcsFaultToleranceOptions.redisUsername",
            )
        )
    autoscaling = _autoscaling(spec)
    v2_env = str(head_env.get("RAY_enable_autoscaler_v2", "")).lower()
    if not autoscaling and v2_env in ("1", "true"):
        issues.append(
            ValidationIssue(
                f"{base}.headGroupSpec.template.spec.containers[0].env",
                "RAY_enable_autoscaler_v2 needs enableInTreeAutoscaling: true",
            )
        )
    options = spec.get("autoscalerOptions") or {}
    if autoscaling and options.get("version") and "RAY_enable_autoscaler_v2" in head_env:
        issues.append(
            ValidationIssue(
                f"{base}.autoscalerOptions.version",
                "both autoscalerOptions.version and the head env var RAY_enable_autoscaler_v2 are "
                "set; use only autoscalerOptions.version",
            )
        )
    v2 = autoscaling and (options.get("version") == "v2" or v2_env in ("1", "true"))
    head_restart = ((head.get("template") or {}).get("spec") or {}).get("restartPolicy")
    if v2 and head_restart not in (None, "", "Never"):
        issues.append(
            ValidationIssue(
                f"{base}.headGroupSpec.template.spec.restartPolicy",
                f"must be Never or unset with autoscaler v2, got {head_restart!r}",
            )
        )
    names: dict[str, int] = {}
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        where = f"{base}.workerGroupSpecs[{i}]"
        pod = (group.get("template") or {}).get("spec") or {}
        if not pod.get("containers"):
            issues.append(ValidationIssue(f"{where}.template.spec.containers", "needs at least one container"))
        gname = group.get("groupName")
        if gname in names:
            issues.append(
                ValidationIssue(
                    f"{where}.groupName",
                    f"duplicate worker group name {gname!r} (also at workerGroupSpecs[{names[gname]}]); "
                    "names must be unique",
                )
            )
        names.setdefault(gname, i)
        low, high = group.get("minReplicas", 0), group.get("maxReplicas", 2**31 - 1)
        if low > high:
            issues.append(
                ValidationIssue(
                    f"{where}.minReplicas",
                    f"must be <= maxReplicas ({high}), got {low}",
                )
            )
        replicas = group.get("replicas")
        if replicas is not None and low <= high and not low <= replicas <= high:
            issues.append(
                ValidationIssue(
                    f"{where}.replicas",
                    f"must be between minReplicas ({low}) and maxReplicas ({high}), got {replicas}",
                )
            )
        if autoscaling and group.get("suspend"):
            issues.append(
                ValidationIssue(f"{where}.suspend", "a worker group cannot be suspended with autoscaling enabled")
            )
        restart = pod.get("restartPolicy")
        if v2 and restart not in (None, "", "Never"):
            issues.append(
                ValidationIssue(
                    f"{where}.template.spec.restartPolicy",
                    f"must be Never or unset with autoscaler v2, got {restart!r}",
                )
            )
    return issues


def _annotations(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    return (doc.get("metadata") or {}).get("annotations") or {}


def _raycluster_rules(doc: Mapping[str, Any]) -> list[ValidationIssue]:
    return _cluster_spec_issues(doc["spec"], "spec", _annotations(doc))


def _rayjob_rules(doc: Mapping[str, Any]) -> list[ValidationIssue]:
    spec = doc["spec"]
    issues = []
    shutdown = bool(spec.get("shutdownAfterJobFinishes"))
    selector = spec.get("clusterSelector") or {}
    cluster = spec.get("rayClusterSpec")
    mode = spec.get("submissionMode", "K8sJobMode")
    if mode not in SUBMISSION_MODES:
        # The CRD has no enum here; the operator rejects the job at reconcile time instead.
        issues.append(
            ValidationIssue("spec.submissionMode", f"must be one of {list(SUBMISSION_MODES)}, got {mode!r}")
        )
    if spec.get("suspend") and not shutdown:
        issues.append(
            ValidationIssue("spec.suspend", "a RayJob can be suspended only with shutdownAfterJobFinishes: true")
        )
    if spec.get("ttlSecondsAfterFinished", 0) > 0 and not shutdown:
        issues.append(
            ValidationIssue(
                "spec.ttlSecondsAfterFinished",
                "allowed only with shutdownAfterJobFinishes: true (there is no cluster to delete otherwise)",
            )
        )
    if cluster is not None and selector:
        issues.append(
            ValidationIssue(
                "spec",
                "exactly one of spec.rayClusterSpec (run on a new cluster) or spec.clusterSelector "
                "(run on an existing one) may be set, not both",
            )
        )
    if cluster is None and not selector:
        issues.append(ValidationIssue("spec", "one of spec.rayClusterSpec or spec.clusterSelector must be set"))
    if selector:
        if not selector.get("ray.io/cluster"):
            issues.append(
                ValidationIssue(
                    "spec.clusterSelector.ray.io/cluster", "required: the name of the existing RayCluster"
                )
            )
        if spec.get("suspend"):
            issues.append(ValidationIssue("spec.suspend", "not supported with spec.clusterSelector"))
        if mode == "SidecarMode":
            issues.append(ValidationIssue("spec.submissionMode", "SidecarMode does not support spec.clusterSelector"))
    if mode == "InteractiveMode" and spec.get("backoffLimit", 0) > 0:
        issues.append(ValidationIssue("spec.backoffLimit", "must be 0 or unset in InteractiveMode"))
    if mode == "SidecarMode":
        for field in ("submitterPodTemplate", "submitterConfig"):
            if spec.get(field) is not None:
                issues.append(ValidationIssue(f"spec.{field}", "not supported in SidecarMode"))
        restart = (((cluster or {}).get("headGroupSpec") or {}).get("template") or {}).get("spec", {}).get(
            "restartPolicy"
        )
        if restart not in (None, "", "Never"):
            issues.append(
                ValidationIssue(
                    "spec.rayClusterSpec.headGroupSpec.template.spec.restartPolicy",
                    f"must be Never or unset in SidecarMode, got {restart!r}",
                )
            )
    if cluster is not None:
        issues += _cluster_spec_issues(cluster, "spec.rayClusterSpec", _annotations(doc))
    runtime_env = spec.get("runtimeEnvYAML")
    if runtime_env:
        try:
            parsed = yaml.safe_load(runtime_env)
        except yaml.YAMLError as exc:
            issues.append(ValidationIssue("spec.runtimeEnvYAML", f"must be a YAML mapping: {exc}"))
        else:
            if parsed is not None and not isinstance(parsed, dict):
                issues.append(
                    ValidationIssue("spec.runtimeEnvYAML", f"must be a YAML mapping, got {type(parsed).__name__}")
                )
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and deadline <= 0:
        issues.append(ValidationIssue("spec.activeDeadlineSeconds", f"must be > 0, got {deadline}"))
    if spec.get("backoffLimit", 0) < 0:
        issues.append(ValidationIssue("spec.backoffLimit", f"must be >= 0, got {spec['backoffLimit']}"))
    if spec.get("ttlSecondsAfterFinished", 0) < 0:
        issues.append(
            ValidationIssue("spec.ttlSecondsAfterFinished", f"must be >= 0, got {spec['ttlSecondsAfterFinished']}")
        )
    issues += _deletion_issues(spec, shutdown, bool(selector))
    return issues


def _deletion_issues(spec: Mapping[str, Any], shutdown: bool, selector_mode: bool) -> list[ValidationIssue]:
    strategy = spec.get("deletionStrategy")
    if strategy is None:
        return []
    base = "spec.deletionStrategy"
    autoscaling = _autoscaling(spec.get("rayClusterSpec") or {})
    legacy = "onSuccess" in strategy or "onFailure" in strategy
    rules = strategy.get("deletionRules")
    issues = []
    if rules is not None and shutdown:
        issues.append(
            ValidationIssue(
                f"{base}.deletionRules",
                "spec.shutdownAfterJobFinishes and deletionRules are mutually exclusive",
            )
        )
    if rules is not None and legacy:
        issues.append(ValidationIssue(base, "use either onSuccess/onFailure or deletionRules, not both"))
    elif legacy:
        for field in ("onSuccess", "onFailure"):
            policy = (strategy.get(field) or {}).get("policy")
            if policy is None:
                issues.append(ValidationIssue(f"{base}.{field}.policy", "required with the legacy deletion policy"))
            elif selector_mode and policy in ("DeleteCluster", "DeleteWorkers"):
                issues.append(
                    ValidationIssue(f"{base}.{field}.policy", f"{policy} is not allowed with spec.clusterSelector")
                )
            elif policy == "DeleteWorkers" and autoscaling:
                issues.append(
                    ValidationIssue(f"{base}.{field}.policy", "DeleteWorkers is not supported with autoscaling")
                )
            elif policy == "DeleteNone" and shutdown:
                issues.append(
                    ValidationIssue(
                        f"{base}.{field}.policy", "DeleteNone contradicts shutdownAfterJobFinishes: true"
                    )
                )
    elif rules is None:
        issues.append(ValidationIssue(base, "needs both onSuccess and onFailure, or deletionRules"))
    else:
        seen: dict[tuple[Any, Any], int] = {}
        for i, rule in enumerate(rules):
            cond = rule.get("condition") or {}
            policy = rule.get("policy")
            where = f"{base}.deletionRules[{i}]"
            if selector_mode and policy in ("DeleteCluster", "DeleteWorkers"):
                issues.append(ValidationIssue(f"{where}.policy", f"{policy} is not allowed with spec.clusterSelector"))
            if autoscaling and policy == "DeleteWorkers":
                issues.append(ValidationIssue(f"{where}.policy", "DeleteWorkers is not supported with autoscaling"))
            key = (cond.get("jobStatus") or cond.get("jobDeploymentStatus"), policy)
            if key in seen:
                issues.append(ValidationIssue(where, f"duplicate rule for {key} (also at index {seen[key]})"))
            seen.setdefault(key, i)
    return issues


def _rayservice_rules(doc: Mapping[str, Any]) -> list[ValidationIssue]:
    spec = doc["spec"]
    issues = []
    cluster = spec.get("rayClusterConfig")
    if cluster is None:
        issues.append(ValidationIssue("spec.rayClusterConfig", "required field is missing"))
    else:
        issues += _cluster_spec_issues(cluster, "spec.rayClusterConfig", _annotations(doc))
        head_svc = (cluster.get("headGroupSpec") or {}).get("headService") or {}
        if (head_svc.get("metadata") or {}).get("name"):
            issues.append(
                ValidationIssue(
                    "spec.rayClusterConfig.headGroupSpec.headService.metadata.name",
                    "must not be set for a RayService (the operator names it)",
                )
            )
    serve = spec.get("serveConfigV2")
    if serve:
        try:
            parsed = yaml.safe_load(serve)
        except yaml.YAMLError as exc:
            issues.append(ValidationIssue("spec.serveConfigV2", f"must be a YAML Serve config: {exc}"))
        else:
            if not isinstance(parsed, dict):
                issues.append(
                    ValidationIssue("spec.serveConfigV2", "must be a YAML mapping (a Serve config with applications)")
                )
    delay = spec.get("rayClusterDeletionDelaySeconds")
    if delay is not None and delay < 0:
        issues.append(ValidationIssue("spec.rayClusterDeletionDelaySeconds", f"must be >= 0, got {delay}"))
    return issues


_CROSS_FIELD = {
    "RayCluster": _raycluster_rules,
    "RayJob": _rayjob_rules,
    "RayService": _rayservice_rules,
}
