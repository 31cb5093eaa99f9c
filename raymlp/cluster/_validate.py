"""Validation of KubeRay ``ray.io/v1`` manifests before anything is sent to a cluster.

Two layers, in the order the API server and then the operator apply them:

1. :mod:`raymlp.cluster._schema`: the CRD's ``openAPIV3Schema`` and CEL rules, as the API
   server applies them (after pruning nulls and filling in defaults);
2. :mod:`raymlp.cluster._rules`: the operator's own rules (KubeRay v1.7.0 ``validation.go``),
   one small named function each, registered per kind.

Every issue carries the path in the manifest (``spec.rayClusterSpec.workerGroupSpecs[0].replicas``)
and says what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raymlp.cluster._crds import KINDS
from raymlp.cluster._rules import (
    FEATURE_GATES,
    MAX_NAME_LENGTH,
    SUBMISSION_MODES,
    metadata_issues,
    rule_issues,
)
from raymlp.cluster._schema import (
    API_VERSION,
    ValidationIssue,
    apply_defaults,
    is_ray_resource,
    schema_issues,
)

__all__ = [
    "FEATURE_GATES",
    "MAX_NAME_LENGTH",
    "SUBMISSION_MODES",
    "ValidationIssue",
    "apply_defaults",
    "is_ray_resource",
    "validate_manifest",
]


def validate_manifest(manifest: Mapping[str, Any], *,
                      feature_gates: Mapping[str, bool] | None = None) -> list[ValidationIssue]:
    """Validate one ``ray.io/v1`` manifest; returns the issues found (empty when valid).

    Args:
        manifest: a parsed RayCluster, RayJob or RayService document.
        feature_gates: the operator's feature gates (``RayJobDeletionPolicy``,
            ``RayServiceIncrementalUpgrade``) as ``name -> enabled``; a gate not given counts as
            enabled, so a manifest that needs it is accepted.

    Returns:
        The issues: metadata first, then schema issues, then (when the schema holds, since the
        operator's rules assume its structure) the operator's rules; each names its path and
        what is allowed.

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
        return [ValidationIssue("apiVersion", f"must be {API_VERSION!r}, got {manifest.get('apiVersion')!r}")]
    unknown = sorted(set(feature_gates or ()) - set(FEATURE_GATES))
    if unknown:
        from raymlp._spec import fail

        raise fail("feature_gates", unknown[0], f"one of {list(FEATURE_GATES)}")
    doc = apply_defaults(kind, manifest)
    issues = schema_issues(kind, doc)
    if not issues:
        issues = rule_issues(kind, doc, feature_gates)
    return metadata_issues(kind, doc) + issues
