"""Layer 2 of manifest validation: the KubeRay operator's own rules, one small function each.

Ported from KubeRay v1.7.0 ``ray-operator/controllers/ray/utils/validation.go``
(``ValidateRayClusterMetadata`` / ``Spec`` / ``Status``, ``ValidateRayClusterUpgradeOptions``,
``ValidateRayJobMetadata`` / ``Spec`` / ``Status``, ``ValidateRayServiceMetadata`` / ``Spec``,
``ValidateClusterUpgradeOptions`` and the helpers they call) and the RayCluster webhook (unique
worker group names). The operator rejects a manifest that breaks one of these at reconcile time,
long after ``kubectl apply`` said "created"; here they fail before anything is sent.

Rules are registered per kind with :func:`_rule`; the rules of a RayCluster spec are registered
with :func:`_cluster_rule` and run on a RayCluster's ``spec``, a RayJob's
``spec.rayClusterSpec`` and a RayService's ``spec.rayClusterConfig`` alike. The operator stops
at the first broken rule; these report every one.

A few rules are raymlp's own, marked so: the operator accepts the manifest but silently does
something else than it says (clamps ``replicas`` into ``[minReplicas, maxReplicas]``, ignores
``rayClusterSpec`` when ``clusterSelector`` is set, fails a RayService whose Serve config is not
a mapping only once it runs).

Feature-gated rules follow the operator's gates, given as ``feature_gates``; a gate that is not
given is taken as enabled (the manifest is accepted as an operator with that gate on would):

- ``RayJobDeletionPolicy``: ``spec.deletionStrategy`` and worker-group ``suspend`` need it.
- ``RayServiceIncrementalUpgrade``: with it, ``NewClusterWithIncrementalUpgrade`` needs
  autoscaling and valid ``clusterUpgradeOptions``.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import yaml

from raymlp.cluster._schema import ValidationIssue

__all__ = ["CLUSTER_RULES", "FEATURE_GATES", "MAX_NAME_LENGTH", "RULES", "SUBMISSION_MODES", "rule_issues"]

# 63-character DNS label minus the longest suffix the operator appends ("-serve-svc") = 53;
# RayJob/RayService names get 6 more characters appended for the generated cluster name.
MAX_NAME_LENGTH = {"RayCluster": 53, "RayJob": 47, "RayService": 47}
SUBMISSION_MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
FEATURE_GATES = ("RayJobDeletionPolicy", "RayServiceIncrementalUpgrade")
RAYSERVICE_UPGRADE_TYPES = ("NewClusterWithIncrementalUpgrade", "NewCluster", "None")
RAYCLUSTER_UPGRADE_TYPES = ("Recreate", "None")

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_GO_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_RAY_START_RESOURCES = ("num-cpus", "num-gpus", "memory", "resources")
_POLICY_ORDER = ("DeleteWorkers", "DeleteCluster", "DeleteSelf")

FT_ANNOTATION = "ray.io/ft-enabled"
EXTERNAL_STORAGE_ANNOTATION = "ray.io/external-storage-namespace"
INITIALIZING_TIMEOUT_ANNOTATION = "ray.io/initializing-timeout"
ORIGINATED_FROM_LABEL = "ray.io/originated-from-crd"
AUTOSCALER_V2_ENV = "RAY_enable_autoscaler_v2"


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What a kind rule reads: the defaulted document and the enabled feature gates."""

    kind: str
    doc: Mapping[str, Any]
    gates: Mapping[str, bool]

    @property
    def spec(self) -> Mapping[str, Any]:
        return self.doc.get("spec") or {}

    @property
    def metadata(self) -> Mapping[str, Any]:
        meta = self.doc.get("metadata")
        return meta if isinstance(meta, Mapping) else {}

    @property
    def annotations(self) -> Mapping[str, Any]:
        return self.metadata.get("annotations") or {}

    def gate(self, name: str) -> bool:
        return bool(self.gates.get(name, True))


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """What a cluster-spec rule reads: one RayCluster spec, where it sits, and its owner."""

    spec: Mapping[str, Any]
    base: str
    owner: Manifest

    @property
    def head(self) -> Mapping[str, Any]:
        return self.spec.get("headGroupSpec") or {}

    @property
    def head_pod(self) -> Mapping[str, Any]:
        return (self.head.get("template") or {}).get("spec") or {}

    @property
    def head_env(self) -> dict[str, Any]:
        containers = self.head_pod.get("containers") or [{}]
        return {e.get("name"): e.get("value") for e in containers[0].get("env") or []}

    @property
    def head_env_path(self) -> str:
        return f"{self.base}.headGroupSpec.template.spec.containers[0].env"

    def workers(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        for i, group in enumerate(self.spec.get("workerGroupSpecs") or []):
            yield f"{self.base}.workerGroupSpecs[{i}]", group

    def groups(self) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
        """(path, name for messages, group) of the head group and every worker group."""
        yield f"{self.base}.headGroupSpec", "Head", self.head
        for where, group in self.workers():
            yield where, str(group.get("groupName")), group

    @property
    def autoscaling(self) -> bool:  # utils.IsAutoscalingEnabled
        return self.spec.get("enableInTreeAutoscaling") is True

    @property
    def autoscaler_v2(self) -> bool:  # utils.IsAutoscalingV2Enabled
        return (self.spec.get("autoscalerOptions") or {}).get("version") == "v2"

    @property
    def v2_env_on(self) -> bool:
        return str(self.head_env.get(AUTOSCALER_V2_ENV)) in ("1", "true")


Issues = Iterable[ValidationIssue]
RULES: dict[str, list[Callable[[Manifest], Issues]]] = {"RayCluster": [], "RayJob": [], "RayService": []}
CLUSTER_RULES: list[Callable[[ClusterSpec], Issues]] = []


def _rule(*kinds: str):
    def register(fn):
        for kind in kinds:
            RULES[kind].append(fn)
        return fn

    return register


def _cluster_rule(fn):
    CLUSTER_RULES.append(fn)
    return fn


def rule_issues(kind: str, doc: Mapping[str, Any], feature_gates: Mapping[str, bool] | None = None) -> list[ValidationIssue]:
    """Every operator rule of ``kind`` that the defaulted ``doc`` breaks."""
    manifest = Manifest(kind, doc, dict(feature_gates or {}))
    issues: list[ValidationIssue] = []
    for fn in RULES[kind]:
        issues += fn(manifest)
    return issues


def metadata_issues(kind: str, doc: Mapping[str, Any]) -> list[ValidationIssue]:
    """The metadata rules alone (they need no valid spec)."""
    manifest = Manifest(kind, doc, {})
    return [*name_is_required(manifest), *name_length(manifest), *name_is_dns1035(manifest)]


def _issue(path: str, message: str) -> list[ValidationIssue]:
    return [ValidationIssue(path, message)]


# --- metadata (ValidateRayClusterMetadata / ValidateRayJobMetadata / ValidateRayServiceMetadata)


def _name(m: Manifest) -> str | None:
    name = m.metadata.get("name")
    return name if isinstance(name, str) and name else None


def name_is_required(m: Manifest) -> Issues:
    if not isinstance(m.doc.get("metadata"), Mapping):
        return _issue("metadata", "required: an object with at least a name")
    if _name(m) is None and not m.metadata.get("generateName"):
        return _issue("metadata.name", "required: a DNS-1035 label")
    return []


def name_length(m: Manifest) -> Issues:
    name, limit = _name(m), MAX_NAME_LENGTH[m.kind]
    if name is not None and len(name) > limit:
        return _issue("metadata.name", f"a {m.kind} name must be at most {limit} characters, got {len(name)} ({name!r})")
    return []


def name_is_dns1035(m: Manifest) -> Issues:
    name = _name(m)
    if name is not None and not _DNS1035.match(name):
        return _issue("metadata.name", "must be a DNS-1035 label: lower-case letters, digits and '-', starting "
                      f"with a letter and ending with a letter or digit; got {name!r}")
    return []


def _go_duration_s(text: str) -> float | None:
    """Seconds of a Go ``time.ParseDuration`` string, or None when it is not one."""
    body = text.lstrip("+-")
    sign = -1.0 if text.startswith("-") else 1.0
    if body == "0":
        return 0.0
    parts = _GO_DURATION_PART.findall(body)
    if not parts or "".join(n + u for n, u in parts) != body:
        return None
    return sign * sum(float(n) * _GO_UNITS[u] for n, u in parts)


@_rule("RayService")
def initializing_timeout_is_positive(m: Manifest) -> Issues:
    value = m.annotations.get(INITIALIZING_TIMEOUT_ANNOTATION)
    if not value:
        return []
    where = f"metadata.annotations.{INITIALIZING_TIMEOUT_ANNOTATION}"
    seconds = _go_duration_s(str(value))
    if seconds is None and re.fullmatch(r"[+-]?\d+", str(value)):
        seconds = float(int(value))
    if seconds is None:
        return _issue(where, f"has invalid format {value!r}: expected a Go duration ('5m', '1h') or a "
                      "positive integer of seconds")
    if seconds <= 0:
        return _issue(where, f"must be a positive duration, got {value!r}")
    return []


# --- RayCluster (ValidateRayClusterUpgradeOptions, ValidateRayClusterStatus) -----------------------


@_rule("RayCluster")
def raycluster_upgrade_strategy_type(m: Manifest) -> Issues:
    kind = (m.spec.get("upgradeStrategy") or {}).get("type")
    if kind is not None and kind not in RAYCLUSTER_UPGRADE_TYPES:
        return _issue("spec.upgradeStrategy.type", f"must be one of {list(RAYCLUSTER_UPGRADE_TYPES)}, got {kind!r}")
    return []


@_rule("RayCluster")
def raycluster_upgrade_strategy_only_when_created_directly(m: Manifest) -> Issues:
    creator = (m.metadata.get("labels") or {}).get(ORIGINATED_FROM_LABEL)
    if (m.spec.get("upgradeStrategy") or {}).get("type") is not None and creator in ("RayJob", "RayService"):
        return _issue("spec.upgradeStrategy", f"cannot be set when the RayCluster is created by a {creator}")
    return []


@_rule("RayCluster")
def raycluster_status_not_suspending_and_suspended(m: Manifest) -> Issues:
    conds = {c.get("type"): c.get("status") for c in (m.doc.get("status") or {}).get("conditions") or []
             if isinstance(c, Mapping)}
    if conds.get("RayClusterSuspending") == "True" and conds.get("RayClusterSuspended") == "True":
        return _issue("status.conditions", "RayClusterSuspending and RayClusterSuspended cannot both be True")
    return []


@_rule("RayCluster")
def raycluster_spec(m: Manifest) -> Issues:
    return _cluster_spec_issues(ClusterSpec(m.spec, "spec", m))


def _cluster_spec_issues(c: ClusterSpec) -> list[ValidationIssue]:
    if not c.head_pod.get("containers"):
        # Every other rule reads the head's Ray container.
        return _issue(f"{c.base}.headGroupSpec.template.spec.containers", "needs at least one container")
    issues: list[ValidationIssue] = []
    for fn in CLUSTER_RULES:
        issues += fn(c)
    return issues


# --- a RayCluster spec (ValidateRayClusterSpec and the webhook) ------------------------------------


@_cluster_rule
def worker_groups_have_a_container(c: ClusterSpec) -> Issues:
    return [ValidationIssue(f"{w}.template.spec.containers", "needs at least one container")
            for w, g in c.workers() if not ((g.get("template") or {}).get("spec") or {}).get("containers")]


@_cluster_rule
def group_resources_in_one_place(c: ClusterSpec) -> Issues:
    out = []
    for where, name, group in c.groups():
        params = group.get("rayStartParams") or {}
        if group.get("resources") and any(params.get(k) for k in _RAY_START_RESOURCES):
            out.append(ValidationIssue(f"{where}.resources", f"resource fields are set in both rayStartParams and "
                                       f"resources for the {name} group; use only one"))
    return out


@_cluster_rule
def group_labels_not_in_ray_start_params(c: ClusterSpec) -> Issues:
    return [ValidationIssue(f"{where}.rayStartParams.labels", f"not supported for the {name} group; use the "
                            "group's top-level labels field") for where, name, group in c.groups()
            if "labels" in (group.get("rayStartParams") or {})]


def _label_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return "its prefix must be a DNS-1123 subdomain of at most 253 characters"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return ("its name must be 1-63 characters of letters, digits, '-', '_' or '.', starting and "
                "ending with a letter or digit")
    return None


@_cluster_rule
def group_labels_are_valid_kubernetes_labels(c: ClusterSpec) -> Issues:
    out = []
    for where, name, group in c.groups():
        for key, value in (group.get("labels") or {}).items():
            problem = _label_key_problem(str(key))
            if problem:
                out.append(ValidationIssue(f"{where}.labels", f"invalid label key {key!r} for the {name} group: {problem}"))
            value = "" if value is None else str(value)
            if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
                out.append(ValidationIssue(f"{where}.labels.{key}", f"invalid label value {value!r} for the {name} "
                                           "group: at most 63 characters of letters, digits, '-', '_' or '.', "
                                           "starting and ending with a letter or digit"))
    return out


@_cluster_rule
def worker_replica_bounds_set_without_autoscaling(c: ClusterSpec) -> Issues:
    if c.autoscaling:
        return []
    return [ValidationIssue(w, f"worker group {g.get('groupName')!r} must set both minReplicas and maxReplicas "
                            "when autoscaling is disabled")
            for w, g in c.workers() if g.get("minReplicas") is None or g.get("maxReplicas") is None]


@_cluster_rule
def worker_replica_bounds_not_negative(c: ClusterSpec) -> Issues:
    return [ValidationIssue(f"{w}.{f}", f"must be >= 0, got {g[f]}") for w, g in c.workers()
            for f in ("minReplicas", "maxReplicas") if isinstance(g.get(f), int) and g[f] < 0]


@_cluster_rule
def worker_min_replicas_at_most_max(c: ClusterSpec) -> Issues:
    return [ValidationIssue(f"{w}.minReplicas", f"must be <= maxReplicas ({g['maxReplicas']}), got {g['minReplicas']}")
            for w, g in c.workers() if isinstance(g.get("minReplicas"), int) and isinstance(g.get("maxReplicas"), int)
            and g["minReplicas"] > g["maxReplicas"]]


@_cluster_rule
def worker_replicas_within_bounds(c: ClusterSpec) -> Issues:
    """raymlp's own: the operator silently clamps ``replicas`` into the bounds."""
    out = []
    for w, g in c.workers():
        low, high, n = g.get("minReplicas", 0), g.get("maxReplicas", 2**31 - 1), g.get("replicas")
        if n is not None and low <= high and not low <= n <= high:
            out.append(ValidationIssue(f"{w}.replicas", f"must be between minReplicas ({low}) and maxReplicas "
                                       f"({high}), got {n}"))
    return out


@_cluster_rule
def worker_idle_timeout_needs_autoscaler_v2(c: ClusterSpec) -> Issues:
    out = []
    for w, g in c.workers():
        idle = g.get("idleTimeoutSeconds")
        if idle is None:
            continue
        if idle < 0:
            out.append(ValidationIssue(f"{w}.idleTimeoutSeconds", f"must be >= 0, got {idle}"))
        elif not (c.autoscaler_v2 or c.v2_env_on):
            out.append(ValidationIssue(f"{w}.idleTimeoutSeconds", "is set but autoscaler v2 is not enabled; set "
                                       f"{c.base}.autoscalerOptions.version: v2"))
    return out


@_cluster_rule
def worker_group_names_are_unique(c: ClusterSpec) -> Issues:
    seen: dict[Any, str] = {}
    out = []
    for w, g in c.workers():
        name = g.get("groupName")
        if name in seen:
            out.append(ValidationIssue(f"{w}.groupName", f"duplicate worker group name {name!r} (also at "
                                       f"{seen[name].rsplit('.', 1)[-1]}); names must be unique"))
        seen.setdefault(name, w)
    return out


@_cluster_rule
def ft_annotation_or_options_not_both(c: ClusterSpec) -> Issues:
    if c.owner.annotations.get(FT_ANNOTATION) and c.spec.get("gcsFaultToleranceOptions") is not None:
        return _issue(f"{c.base}.gcsFaultToleranceOptions", f"the {FT_ANNOTATION} annotation and "
                      "gcsFaultToleranceOptions are both set; use only gcsFaultToleranceOptions")
    return []


@_cluster_rule
def redis_address_env_needs_ft_options(c: ClusterSpec) -> Issues:
    ft = c.spec.get("gcsFaultToleranceOptions") is not None or \
        str(c.owner.annotations.get(FT_ANNOTATION, "")).lower() == "true"
    if not ft and "RAY_REDIS_ADDRESS" in c.head_env:
        return _issue(c.head_env_path, "RAY_REDIS_ADDRESS implicitly enables GCS fault tolerance; set "
                      "gcsFaultToleranceOptions instead")
    return []


@_cluster_rule
def ft_options_exclude_redis_password_param(c: ClusterSpec) -> Issues:
    if c.spec.get("gcsFaultToleranceOptions") is not None and (c.head.get("rayStartParams") or {}).get("redis-password"):
        return _issue(f"{c.base}.headGroupSpec.rayStartParams.redis-password", "not allowed with "
                      "gcsFaultToleranceOptions; use gcsFaultToleranceOptions.redisPassword")
    return []


@_cluster_rule
def ft_options_exclude_redis_env(c: ClusterSpec) -> Issues:
    if c.spec.get("gcsFaultToleranceOptions") is None:
        return []
    return [ValidationIssue(c.head_env_path, f"{env} must not be set with gcsFaultToleranceOptions; use "
                            f"gcsFaultToleranceOptions.{field}")
            for env, field in (("REDIS_PASSWORD", "redisPassword"), ("RAY_REDIS_ADDRESS", "redisAddress"))
            if env in c.head_env]


@_cluster_rule
def ft_options_exclude_storage_namespace_annotation(c: ClusterSpec) -> Issues:
    if c.spec.get("gcsFaultToleranceOptions") is not None and c.owner.annotations.get(EXTERNAL_STORAGE_ANNOTATION):
        return _issue(f"metadata.annotations.{EXTERNAL_STORAGE_ANNOTATION}", "not allowed with "
                      "gcsFaultToleranceOptions; use gcsFaultToleranceOptions.externalStorageNamespace")
    return []


@_cluster_rule
def no_redis_username_outside_ft_options(c: ClusterSpec) -> Issues:
    if (c.head.get("rayStartParams") or {}).get("redis-username") or "REDIS_USERNAME" in c.head_env:
        return _issue(f"{c.base}.headGroupSpec", "a redis username in rayStartParams or REDIS_USERNAME is not "
                      "allowed; use gcsFaultToleranceOptions.redisUsername")
    return []


@_cluster_rule
def worker_suspend_needs_deletion_policy_gate(c: ClusterSpec) -> Issues:
    if c.owner.gate("RayJobDeletionPolicy"):
        return []
    return [ValidationIssue(f"{w}.suspend", "a worker group can be suspended only with the operator's "
                            "RayJobDeletionPolicy feature gate enabled") for w, g in c.workers() if g.get("suspend")]


@_cluster_rule
def autoscaler_v2_env_needs_autoscaling(c: ClusterSpec) -> Issues:
    if not c.autoscaling and c.v2_env_on:
        return _issue(c.head_env_path, f"{AUTOSCALER_V2_ENV}={c.head_env[AUTOSCALER_V2_ENV]!r} needs "
                      "enableInTreeAutoscaling: true")
    return []


@_cluster_rule
def worker_suspend_excludes_autoscaling(c: ClusterSpec) -> Issues:
    if not c.autoscaling:
        return []
    return [ValidationIssue(f"{w}.suspend", "a worker group cannot be suspended with autoscaling enabled")
            for w, g in c.workers() if g.get("suspend")]


@_cluster_rule
def autoscaler_version_or_env_not_both(c: ClusterSpec) -> Issues:
    if c.autoscaling and (c.spec.get("autoscalerOptions") or {}).get("version") and AUTOSCALER_V2_ENV in c.head_env:
        return _issue(f"{c.base}.autoscalerOptions.version", f"both autoscalerOptions.version and the head env var "
                      f"{AUTOSCALER_V2_ENV} are set; use only autoscalerOptions.version")
    return []


@_cluster_rule
def autoscaler_v2_head_restart_policy_never(c: ClusterSpec) -> Issues:
    restart = c.head_pod.get("restartPolicy")
    if c.autoscaling and c.autoscaler_v2 and restart not in (None, "", "Never"):
        return _issue(f"{c.base}.headGroupSpec.template.spec.restartPolicy",
                      f"must be Never or unset with autoscaler v2, got {restart!r}")
    return []


@_cluster_rule
def autoscaler_v2_worker_restart_policy_never(c: ClusterSpec) -> Issues:
    if not (c.autoscaling and c.autoscaler_v2):
        return []
    out = []
    for w, g in c.workers():
        restart = ((g.get("template") or {}).get("spec") or {}).get("restartPolicy")
        if restart not in (None, "", "Never"):
            out.append(ValidationIssue(f"{w}.template.spec.restartPolicy",
                                       f"must be Never or unset with autoscaler v2, got {restart!r}"))
    return out


@_cluster_rule
def autoscaler_idle_timeout_not_negative(c: ClusterSpec) -> Issues:
    idle = (c.spec.get("autoscalerOptions") or {}).get("idleTimeoutSeconds")
    if isinstance(idle, int) and idle < 0:
        return _issue(f"{c.base}.autoscalerOptions.idleTimeoutSeconds", f"must be >= 0, got {idle}")
    return []


def _version(text: Any) -> tuple[int, ...] | None:
    match = re.match(r"^\s*v?(\d+(?:\.\d+)+)", str(text or ""))
    return tuple(int(p) for p in match.group(1).split(".")) if match else None


@_cluster_rule
def token_auth_needs_ray_2_52(c: ClusterSpec) -> Issues:
    auth = c.spec.get("authOptions") or {}
    if auth.get("mode") != "token":
        return []
    where, given = f"{c.base}.rayVersion", c.spec.get("rayVersion")
    if not given:
        return _issue(where, "required with authOptions.mode 'token' (Ray 2.52.0 or later)")
    found = _version(given)
    if found is None:
        return _issue(where, f"must be a version such as '2.52.0' with authOptions.mode 'token', got {given!r}")
    if found < (2, 52):
        return _issue(where, f"must be >= 2.52.0 with authOptions.mode 'token', got {given!r}")
    if auth.get("enableK8sTokenAuth") and found < (2, 55):
        return _issue(where, f"must be >= 2.55.0 with authOptions.enableK8sTokenAuth, got {given!r}")
    return []


@_cluster_rule
def kubernetes_token_auth_needs_token_mode(c: ClusterSpec) -> Issues:
    auth = c.spec.get("authOptions") or {}
    if auth.get("enableK8sTokenAuth") and auth.get("mode") != "token":
        return _issue(f"{c.base}.authOptions.enableK8sTokenAuth", "needs authOptions.mode 'token'")
    return []


@_cluster_rule
def embedded_cluster_has_no_upgrade_strategy(c: ClusterSpec) -> Issues:
    # The operator labels the RayCluster it creates ray.io/originated-from-crd=<owner kind> and
    # then rejects an upgradeStrategy on it (ValidateRayClusterUpgradeOptions).
    if c.owner.kind != "RayCluster" and (c.spec.get("upgradeStrategy") or {}).get("type") is not None:
        return _issue(f"{c.base}.upgradeStrategy", f"cannot be set when the RayCluster is created by a {c.owner.kind}")
    return []


# --- RayJob (ValidateRayJobSpec, validateDeletionConfiguration, ValidateRayJobStatus) --------------


def _selector_mode(m: Manifest) -> bool:
    return bool(m.spec.get("clusterSelector"))


def _job_cluster(m: Manifest) -> ClusterSpec | None:
    cluster = m.spec.get("rayClusterSpec")
    return ClusterSpec(cluster, "spec.rayClusterSpec", m) if cluster is not None else None


@_rule("RayJob")
def suspend_needs_shutdown_after_finish(m: Manifest) -> Issues:
    if m.spec.get("suspend") and not m.spec.get("shutdownAfterJobFinishes"):
        return _issue("spec.suspend", "a RayJob can be suspended only with shutdownAfterJobFinishes: true")
    return []


@_rule("RayJob")
def ttl_not_negative(m: Manifest) -> Issues:
    ttl = m.spec.get("ttlSecondsAfterFinished", 0)
    return _issue("spec.ttlSecondsAfterFinished", f"must be >= 0, got {ttl}") if ttl < 0 else []


@_rule("RayJob")
def ttl_needs_shutdown_after_finish(m: Manifest) -> Issues:
    if m.spec.get("ttlSecondsAfterFinished", 0) > 0 and not m.spec.get("shutdownAfterJobFinishes"):
        return _issue("spec.ttlSecondsAfterFinished", "allowed only with shutdownAfterJobFinishes: true (there is "
                      "no cluster to delete otherwise)")
    return []


@_rule("RayJob")
def deletion_strategy(m: Manifest) -> Issues:
    strategy = m.spec.get("deletionStrategy")
    if strategy is None:
        return []
    base = "spec.deletionStrategy"
    if not m.gate("RayJobDeletionPolicy"):
        return _issue(base, "needs the operator's RayJobDeletionPolicy feature gate")
    legacy = strategy.get("onSuccess") is not None or strategy.get("onFailure") is not None
    rules = bool(strategy.get("deletionRules"))
    if rules and m.spec.get("shutdownAfterJobFinishes"):
        return _issue(f"{base}.deletionRules", "spec.shutdownAfterJobFinishes and deletionRules are mutually exclusive")
    if rules and legacy:
        return _issue(base, "use either onSuccess/onFailure or deletionRules, not both")
    if legacy:
        return _legacy_deletion_policies(m, strategy, base)
    if rules:
        return _deletion_rules(m, strategy["deletionRules"], f"{base}.deletionRules")
    return _issue(base, "needs both onSuccess and onFailure, or a non-empty deletionRules")


def _legacy_deletion_policies(m: Manifest, strategy: Mapping[str, Any], base: str) -> Issues:
    for field in ("onSuccess", "onFailure"):
        if strategy.get(field) is None:
            return _issue(f"{base}.{field}", "required with the legacy deletion policy (onSuccess and onFailure)")
        if strategy[field].get("policy") is None:
            return _issue(f"{base}.{field}.policy", "required with the legacy deletion policy")
    policies = {f: strategy[f]["policy"] for f in ("onSuccess", "onFailure")}
    if _selector_mode(m):
        for field, policy in policies.items():
            if policy in ("DeleteCluster", "DeleteWorkers"):
                return _issue(f"{base}.{field}.policy", f"{policy} is not allowed with spec.clusterSelector")
    cluster = _job_cluster(m)
    if "DeleteWorkers" in policies.values() and cluster is not None and cluster.autoscaling:
        field = next(f for f, p in policies.items() if p == "DeleteWorkers")
        return _issue(f"{base}.{field}.policy", "DeleteWorkers is not supported with autoscaling")
    if m.spec.get("shutdownAfterJobFinishes") and "DeleteNone" in policies.values():
        field = next(f for f, p in policies.items() if p == "DeleteNone")
        return _issue(f"{base}.{field}.policy", "DeleteNone contradicts shutdownAfterJobFinishes: true")
    return []


def _deletion_rules(m: Manifest, rules: list[Mapping[str, Any]], base: str) -> Issues:
    out: list[ValidationIssue] = []
    cluster = _job_cluster(m)
    ttls: dict[tuple[str, Any], dict[str, int]] = {}
    for i, rule in enumerate(rules):
        where, cond, policy = f"{base}[{i}]", rule.get("condition") or {}, rule.get("policy")
        has_job, has_deploy = cond.get("jobStatus") is not None, cond.get("jobDeploymentStatus") is not None
        if has_job == has_deploy:
            out.append(ValidationIssue(f"{where}.condition", "exactly one of jobStatus and jobDeploymentStatus "
                                       f"must be set, got {'both' if has_job else 'neither'}"))
            continue
        ttl = cond.get("ttlSeconds", 0)
        if ttl < 0:
            out.append(ValidationIssue(f"{where}.condition.ttlSeconds", f"must be >= 0, got {ttl}"))
            continue
        if _selector_mode(m) and policy in ("DeleteCluster", "DeleteWorkers"):
            out.append(ValidationIssue(f"{where}.policy", f"{policy} is not allowed with spec.clusterSelector"))
            continue
        if cluster is not None and cluster.autoscaling and policy == "DeleteWorkers":
            out.append(ValidationIssue(f"{where}.policy", "DeleteWorkers is not supported with autoscaling"))
            continue
        key = ("jobStatus", cond["jobStatus"]) if has_job else ("jobDeploymentStatus", cond["jobDeploymentStatus"])
        group = ttls.setdefault(key, {})
        if policy in group:
            out.append(ValidationIssue(where, f"duplicate rule for policy {policy} and {key[0]} {key[1]}"))
            continue
        group[policy] = ttl
    for (what, status), group in ttls.items():
        order = [(p, group[p]) for p in _POLICY_ORDER if p in group]
        for (before, low), (after, high) in itertools.pairwise(order):
            if high < low:
                out.append(ValidationIssue(base, f"for {what} {status}: the {after} TTL ({high}) must be >= the "
                                           f"{before} TTL ({low}); workers go first, then the cluster, then the job"))
    return out


@_rule("RayJob")
def suspend_not_with_cluster_selector(m: Manifest) -> Issues:
    if m.spec.get("suspend") and _selector_mode(m):
        return _issue("spec.suspend", "not supported with spec.clusterSelector")
    return []


@_rule("RayJob")
def cluster_or_selector(m: Manifest) -> Issues:
    if m.spec.get("rayClusterSpec") is None and not _selector_mode(m):
        return _issue("spec", "one of spec.rayClusterSpec or spec.clusterSelector must be set")
    return []


@_rule("RayJob")
def cluster_and_selector_not_both(m: Manifest) -> Issues:
    """raymlp's own: with a clusterSelector the operator ignores rayClusterSpec."""
    if m.spec.get("rayClusterSpec") is not None and _selector_mode(m):
        return _issue("spec", "exactly one of spec.rayClusterSpec (run on a new cluster) or spec.clusterSelector "
                      "(run on an existing one) may be set, not both")
    return []


@_rule("RayJob")
def cluster_selector_names_a_cluster(m: Manifest) -> Issues:
    if _selector_mode(m) and not m.spec["clusterSelector"].get("ray.io/cluster"):
        return _issue("spec.clusterSelector.ray.io/cluster", "required: the name of the existing RayCluster")
    return []


@_rule("RayJob")
def cluster_selector_not_in_sidecar_mode(m: Manifest) -> Issues:
    if _selector_mode(m) and m.spec.get("submissionMode") == "SidecarMode":
        return _issue("spec.submissionMode", "SidecarMode does not support spec.clusterSelector")
    return []


@_rule("RayJob")
def cluster_selector_has_no_backoff_limit(m: Manifest) -> Issues:
    if _selector_mode(m) and (m.spec.get("backoffLimit") or 0) > 0:
        return _issue("spec.backoffLimit", "must be 0 or unset with spec.clusterSelector")
    return []


@_rule("RayJob")
def interactive_mode_has_no_backoff_limit(m: Manifest) -> Issues:
    if m.spec.get("submissionMode") == "InteractiveMode" and (m.spec.get("backoffLimit") or 0) > 0:
        return _issue("spec.backoffLimit", "must be 0 or unset in InteractiveMode")
    return []


@_rule("RayJob")
def submission_mode_is_known(m: Manifest) -> Issues:
    mode = m.spec.get("submissionMode", "K8sJobMode")
    if mode not in SUBMISSION_MODES:
        # The CRD has no enum here; the operator rejects the job at reconcile time instead.
        return _issue("spec.submissionMode", f"must be one of {list(SUBMISSION_MODES)}, got {mode!r}")
    return []


@_rule("RayJob")
def sidecar_mode_has_no_submitter(m: Manifest) -> Issues:
    if m.spec.get("submissionMode") != "SidecarMode":
        return []
    return [ValidationIssue(f"spec.{f}", "not supported in SidecarMode")
            for f in ("submitterPodTemplate", "submitterConfig") if m.spec.get(f) is not None]


@_rule("RayJob")
def sidecar_mode_head_restart_policy_never(m: Manifest) -> Issues:
    cluster = _job_cluster(m)
    if m.spec.get("submissionMode") != "SidecarMode" or cluster is None:
        return []
    restart = cluster.head_pod.get("restartPolicy")
    if restart not in (None, "", "Never"):
        return _issue("spec.rayClusterSpec.headGroupSpec.template.spec.restartPolicy",
                      f"must be Never or unset in SidecarMode, got {restart!r}")
    return []


@_rule("RayJob")
def rayjob_cluster_spec(m: Manifest) -> Issues:
    cluster = _job_cluster(m)
    return _cluster_spec_issues(cluster) if cluster is not None else []


@_rule("RayJob")
def runtime_env_yaml_is_a_mapping(m: Manifest) -> Issues:
    text = m.spec.get("runtimeEnvYAML")
    if not text:
        return []
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return _issue("spec.runtimeEnvYAML", f"must be a YAML mapping: {exc}")
    if parsed is not None and not isinstance(parsed, dict):
        return _issue("spec.runtimeEnvYAML", f"must be a YAML mapping, got {type(parsed).__name__}")
    return []


@_rule("RayJob")
def active_deadline_positive(m: Manifest) -> Issues:
    deadline = m.spec.get("activeDeadlineSeconds")
    if deadline is not None and deadline <= 0:
        return _issue("spec.activeDeadlineSeconds", f"must be > 0, got {deadline}")
    return []


@_rule("RayJob")
def backoff_limit_not_negative(m: Manifest) -> Issues:
    limit = m.spec.get("backoffLimit")
    return _issue("spec.backoffLimit", f"must be >= 0, got {limit}") if limit is not None and limit < 0 else []


@_rule("RayJob")
def rayjob_status_waiting_only_in_interactive_mode(m: Manifest) -> Issues:
    if (m.doc.get("status") or {}).get("jobDeploymentStatus") == "Waiting" and \
            m.spec.get("submissionMode") != "InteractiveMode":
        return _issue("status.jobDeploymentStatus", "can be Waiting only in InteractiveMode")
    return []


# --- RayService (ValidateRayServiceSpec, ValidateClusterUpgradeOptions) ----------------------------


def _service_cluster(m: Manifest) -> ClusterSpec | None:
    cluster = m.spec.get("rayClusterConfig")
    return ClusterSpec(cluster, "spec.rayClusterConfig", m) if cluster is not None else None


@_rule("RayService")
def rayservice_cluster_config(m: Manifest) -> Issues:
    cluster = _service_cluster(m)
    if cluster is None:
        return _issue("spec.rayClusterConfig", "required field is missing")
    return _cluster_spec_issues(cluster)


@_rule("RayService")
def head_service_name_not_set(m: Manifest) -> Issues:
    head_svc = ((m.spec.get("rayClusterConfig") or {}).get("headGroupSpec") or {}).get("headService") or {}
    if (head_svc.get("metadata") or {}).get("name"):
        return _issue("spec.rayClusterConfig.headGroupSpec.headService.metadata.name",
                      "must not be set for a RayService (the operator names it)")
    return []


@_rule("RayService")
def rayservice_upgrade_strategy_type(m: Manifest) -> Issues:
    kind = (m.spec.get("upgradeStrategy") or {}).get("type")
    if kind is not None and kind not in RAYSERVICE_UPGRADE_TYPES:
        return _issue("spec.upgradeStrategy.type", f"must be one of {list(RAYSERVICE_UPGRADE_TYPES)}, got {kind!r}")
    return []


@_rule("RayService")
def cluster_deletion_delay_not_negative(m: Manifest) -> Issues:
    delay = m.spec.get("rayClusterDeletionDelaySeconds")
    if delay is not None and delay < 0:
        return _issue("spec.rayClusterDeletionDelaySeconds", f"must be >= 0, got {delay}")
    return []


@_rule("RayService")
def incremental_upgrade_options(m: Manifest) -> Issues:
    strategy = m.spec.get("upgradeStrategy") or {}
    if strategy.get("type") != "NewClusterWithIncrementalUpgrade" or not m.gate("RayServiceIncrementalUpgrade"):
        return []
    base = "spec.upgradeStrategy.clusterUpgradeOptions"
    cluster = _service_cluster(m)
    if cluster is None or not cluster.autoscaling:
        return _issue("spec.rayClusterConfig.enableInTreeAutoscaling",
                      "must be true for NewClusterWithIncrementalUpgrade (it needs the Ray autoscaler)")
    options = strategy.get("clusterUpgradeOptions")
    if options is None:
        return _issue(base, "required for NewClusterWithIncrementalUpgrade")
    out = []
    surge = options.get("maxSurgePercent", 100)
    if not 0 <= surge <= 100:
        out.append(ValidationIssue(f"{base}.maxSurgePercent", f"must be between 0 and 100, got {surge}"))
    step = options.get("stepSizePercent")
    if step is None or not 0 <= step <= 100:
        out.append(ValidationIssue(f"{base}.stepSizePercent", f"must be between 0 and 100, got {step}"))
    interval = options.get("intervalSeconds")
    if interval is None or interval <= 0:
        out.append(ValidationIssue(f"{base}.intervalSeconds", f"must be > 0, got {interval}"))
    if not options.get("gatewayClassName"):
        out.append(ValidationIssue(f"{base}.gatewayClassName", "required for NewClusterWithIncrementalUpgrade"))
    return out


@_rule("RayService")
def serve_config_is_a_mapping(m: Manifest) -> Issues:
    """raymlp's own: the operator fails such a service only once it deploys the config."""
    text = m.spec.get("serveConfigV2")
    if not text:
        return []
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return _issue("spec.serveConfigV2", f"must be a YAML Serve config: {exc}")
    if not isinstance(parsed, dict):
        return _issue("spec.serveConfigV2", "must be a YAML mapping (a Serve config with applications)")
    return []
