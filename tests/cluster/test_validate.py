"""Validation of ray.io/v1 manifests against the KubeRay CRD schemas and the operator's rules."""

from __future__ import annotations

import copy
import gzip
import json
from importlib import resources
from pathlib import Path

import pytest
import yaml

from raymlp.cluster import validate_manifest
from raymlp.cluster._crds import KINDS, load_schema
from raymlp.cluster._crds.generate import compact_schema, encode
from raymlp.cluster._validate import apply_defaults, is_ray_resource

# Beside the repository, as in CI (the crd_dir fixture skips when it is absent).
CRD_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "kuberay-crds"


def _sample_docs():
    if not CRD_DIR.is_dir():
        return []
    samples = sorted((CRD_DIR / "samples").glob("*.yaml"))
    out = []
    for path in samples:
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if is_ray_resource(doc):
                out.append(pytest.param(doc, id=f"{path.name}[{i}]"))
    return out


SAMPLES = _sample_docs()


def _paths(issues):
    return [i.path for i in issues]


@pytest.fixture
def job(crd_dir):
    return _first_ray(crd_dir / "samples" / "ray-job.sample.yaml")


@pytest.fixture
def cluster(crd_dir):
    return _first_ray(crd_dir / "samples" / "ray-cluster.autoscaler-v2.yaml")


def _first_ray(path):
    return next(d for d in yaml.safe_load_all(path.read_text()) if is_ray_resource(d))


def test_kuberay_samples_are_all_found():
    # Every RayCluster, RayJob and RayService document in the v1.7.0 samples (86 of them).
    kinds = sorted({p.values[0]["kind"] for p in SAMPLES})
    assert len(SAMPLES) >= 80 and kinds == ["RayCluster", "RayJob", "RayService"]


@pytest.mark.parametrize("doc", SAMPLES)
def test_every_kuberay_sample_is_valid(doc):
    assert validate_manifest(doc) == []


def test_shipped_schemas_are_generated_from_the_kuberay_crds(crd_dir):
    for plural in KINDS.values():
        fresh = encode(compact_schema(crd_dir / f"ray.io_{plural}.yaml"))
        data = resources.files("raymlp.cluster._crds").joinpath(f"{plural}.json.gz").read_bytes()
        assert json.loads(gzip.decompress(data)) == json.loads(gzip.decompress(fresh)), plural
        assert data == fresh, f"{plural}.json.gz is not byte-reproducible; rerun the generator"


def test_wrong_type_names_path_and_allowed_type(job):
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "two"
    (issue,) = validate_manifest(job)
    assert issue.path == "spec.rayClusterSpec.workerGroupSpecs[0].replicas"
    assert "must be of type integer" in issue.message and "'two'" in issue.message


def test_missing_required_field_is_named(job):
    del job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["name"]
    assert _paths(validate_manifest(job)) == [
        "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].name"
    ]


def test_unknown_field_is_reported_with_the_allowed_ones(job):
    group = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    group["replica"] = group.pop("replicas")
    (issue,) = validate_manifest(job)
    assert issue.path == "spec.rayClusterSpec.workerGroupSpecs[0].replica"
    assert "unknown field 'replica'" in issue.message and "replicas" in issue.message


def test_bad_enum_value_lists_the_allowed_values(cluster):
    cluster["spec"]["autoscalerOptions"]["upscalingMode"] = "Fast"
    (issue,) = validate_manifest(cluster)
    assert issue.path == "spec.autoscalerOptions.upscalingMode"
    assert "['Default', 'Aggressive', 'Conservative']" in issue.message


def test_int_or_string_rejects_a_float_and_takes_both_forms(job):
    limits = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    limits["cpu"] = 2
    limits["memory"] = "2Gi"
    assert validate_manifest(job) == []
    limits["cpu"] = 1.5
    (issue,) = validate_manifest(job)
    assert issue.path.endswith("resources.limits.cpu") and "integer or string" in issue.message


def test_ray_start_params_must_be_strings(job):
    job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    (issue,) = validate_manifest(job)
    assert issue.path == "spec.rayClusterSpec.headGroupSpec.rayStartParams.num-cpus"
    assert 'quote it: "0"' in issue.message


def test_null_on_non_nullable_field_is_pruned_like_the_api_server(job):
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["rayStartParams"] = None
    assert validate_manifest(job) == []
    assert "rayStartParams" not in apply_defaults("RayJob", job)["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]


def test_defaults_are_applied_before_validation(job):
    group = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    group.pop("minReplicas", None)
    group.pop("maxReplicas", None)
    defaulted = apply_defaults("RayJob", job)["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    schema = load_schema("RayJob")["properties"]["spec"]["properties"]["rayClusterSpec"]["properties"]
    group_schema = schema["workerGroupSpecs"]["items"]["properties"]
    # minReplicas/maxReplicas are `required` in the CRD yet defaulted, so omitting them is valid.
    assert defaulted["minReplicas"] == group_schema["minReplicas"]["default"]
    assert defaulted["maxReplicas"] == group_schema["maxReplicas"]["default"]
    assert validate_manifest(job) == []


def test_list_map_keys_must_be_unique(job):
    ports = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    ports.append(dict(ports[0], name="again"))
    (issue,) = validate_manifest(job)
    assert issue.path.endswith(f"ports[{len(ports) - 1}]") and "duplicate key" in issue.message


def test_int32_range_is_checked(job):
    ports = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    ports[0]["containerPort"] = 2**31
    (issue,) = validate_manifest(job)
    assert issue.path.endswith("ports[0].containerPort") and "int32" in issue.message


@pytest.mark.parametrize(
    "mutate, path, words",
    [
        (lambda d: d["spec"].__setitem__("clusterSelector", {"ray.io/cluster": "c"}), "spec", "exactly one"),
        (lambda d: d["spec"].pop("rayClusterSpec"), "spec", "one of spec.rayClusterSpec or spec.clusterSelector"),
        (
            lambda d: d["spec"].update(shutdownAfterJobFinishes=False, ttlSecondsAfterFinished=60),
            "spec.ttlSecondsAfterFinished",
            "shutdownAfterJobFinishes",
        ),
        (lambda d: d["metadata"].__setitem__("name", "j" * 48), "metadata.name", "at most 47"),
        (lambda d: d["metadata"].__setitem__("name", "Bad_Name"), "metadata.name", "DNS-1035"),
        (
            lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(minReplicas=5, maxReplicas=2),
            "spec.rayClusterSpec.workerGroupSpecs[0].minReplicas",
            "<= maxReplicas (2)",
        ),
        (
            lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(replicas=9, minReplicas=1, maxReplicas=5),
            "spec.rayClusterSpec.workerGroupSpecs[0].replicas",
            "between minReplicas (1) and maxReplicas (5)",
        ),
        (lambda d: d["spec"].__setitem__("submissionMode", "Batch"), "spec.submissionMode", "K8sJobMode"),
        (lambda d: d["spec"].__setitem__("activeDeadlineSeconds", 0), "spec.activeDeadlineSeconds", "> 0"),
        (
            lambda d: d["spec"].update(submissionMode="InteractiveMode", backoffLimit=2),
            "spec.backoffLimit",
            "InteractiveMode",
        ),
        (lambda d: d["spec"].__setitem__("runtimeEnvYAML", "[a, b"), "spec.runtimeEnvYAML", "YAML"),
    ],
)
def test_rayjob_cross_field_rules_name_the_path(job, mutate, path, words):
    mutate(job)
    issues = validate_manifest(job)
    assert any(i.path == path and words in i.message for i in issues), [str(i) for i in issues]


def test_raycluster_rules(cluster):
    doc = copy.deepcopy(cluster)
    doc["metadata"]["name"] = "c" * 54
    assert [str(i) for i in validate_manifest(doc)] == [
        f"metadata.name: a RayCluster name must be at most 53 characters, got 54 ('{'c' * 54}')"
    ]
    doc = copy.deepcopy(cluster)
    doc["spec"]["headGroupSpec"]["template"]["spec"]["restartPolicy"] = "Always"
    assert _paths(validate_manifest(doc)) == ["spec.headGroupSpec.template.spec.restartPolicy"]
    doc = copy.deepcopy(cluster)
    doc["spec"]["workerGroupSpecs"].append(copy.deepcopy(doc["spec"]["workerGroupSpecs"][0]))
    assert _paths(validate_manifest(doc)) == ["spec.workerGroupSpecs[1].groupName"]


def test_gcs_fault_tolerance_conflicts(crd_dir):
    doc = _first_ray(crd_dir / "samples" / "ray-cluster.external-redis.yaml")
    assert validate_manifest(doc) == []
    doc["spec"]["headGroupSpec"]["rayStartParams"]["redis-password"] = "secret"
    assert _paths(validate_manifest(doc)) == ["spec.headGroupSpec.rayStartParams.redis-password"]


def test_rayservice_rules(crd_dir):
    doc = _first_ray(crd_dir / "samples" / "ray-service.sample.yaml")
    doc["metadata"]["name"] = "s" * 48
    doc["spec"]["serveConfigV2"] = "- just\n- a list\n"
    assert sorted(_paths(validate_manifest(doc))) == ["metadata.name", "spec.serveConfigV2"]


def test_wrong_api_version_or_kind():
    assert [str(i) for i in validate_manifest({"apiVersion": "ray.io/v1alpha1", "kind": "RayJob"})] == [
        "apiVersion: must be 'ray.io/v1', got 'ray.io/v1alpha1'"
    ]
    assert validate_manifest({"apiVersion": "ray.io/v1", "kind": "RayCronJob"})[0].path == "kind"


# --- every ported operator rule: a manifest that breaks exactly that rule --------------------------


@pytest.fixture
def service(crd_dir):
    return _first_ray(crd_dir / "samples" / "ray-service.sample.yaml")


def _head_env(spec, *env):
    container = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    container["env"] = [*container.get("env", []), *({"name": n, "value": v} for n, v in env)]


def _worker(spec):
    return spec["workerGroupSpecs"][0]


def _selector(d, **spec):
    d["spec"].pop("rayClusterSpec")
    d["spec"].update({"clusterSelector": {"ray.io/cluster": "c"}, "shutdownAfterJobFinishes": False, **spec})


def _rules(*rules):
    return {"deletionRules": [{"condition": {"jobStatus": s, "ttlSeconds": t}, "policy": p} for s, p, t in rules]}


_GATES_OFF = {"RayJobDeletionPolicy": False, "RayServiceIncrementalUpgrade": False}
_COND = {"status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z", "reason": "r", "message": ""}

# (fixture, mutate, feature gates, path, words)
RULE_CASES = {
    # ValidateRayClusterSpec, on a RayCluster ("spec") and embedded in a RayJob
    "head_container": ("cluster", lambda d: d["spec"]["headGroupSpec"]["template"]["spec"].update(containers=[]),
                       None, "spec.headGroupSpec.template.spec.containers", "at least one container"),
    "worker_container": ("cluster", lambda d: _worker(d["spec"])["template"]["spec"].update(containers=[]),
                         None, "spec.workerGroupSpecs[0].template.spec.containers", "at least one container"),
    "group_resources": ("cluster", lambda d: d["spec"]["headGroupSpec"].update(
        resources={"CPU": "1"}, rayStartParams={"num-cpus": "1"}), None, "spec.headGroupSpec.resources", "only one"),
    "labels_in_params": ("cluster", lambda d: _worker(d["spec"])["rayStartParams"].update(labels="a=b"),
                         None, "spec.workerGroupSpecs[0].rayStartParams.labels", "top-level labels"),
    "label_key": ("cluster", lambda d: _worker(d["spec"]).update(labels={"bad key!": "x"}),
                  None, "spec.workerGroupSpecs[0].labels", "invalid label key 'bad key!'"),
    "label_value": ("cluster", lambda d: _worker(d["spec"]).update(labels={"zone": "not ok!"}),
                    None, "spec.workerGroupSpecs[0].labels.zone", "invalid label value 'not ok!'"),
    "min_replicas_negative": ("cluster", lambda d: _worker(d["spec"]).update(minReplicas=-1),
                              None, "spec.workerGroupSpecs[0].minReplicas", "must be >= 0, got -1"),
    "group_idle_negative": ("cluster", lambda d: _worker(d["spec"]).update(idleTimeoutSeconds=-5),
                            None, "spec.workerGroupSpecs[0].idleTimeoutSeconds", ">= 0"),
    "group_idle_needs_v2": ("job", lambda d: _worker(d["spec"]["rayClusterSpec"]).update(idleTimeoutSeconds=30),
                            None, "spec.rayClusterSpec.workerGroupSpecs[0].idleTimeoutSeconds", "autoscaler v2"),
    "ft_annotation_and_options": ("cluster", lambda d: (
        d["metadata"].setdefault("annotations", {}).update({"ray.io/ft-enabled": "true"}),
        d["spec"].update(gcsFaultToleranceOptions={"redisAddress": "redis:6379"})),
        None, "spec.gcsFaultToleranceOptions", "use only gcsFaultToleranceOptions"),
    "redis_env_without_ft": ("cluster", lambda d: _head_env(d["spec"], ("RAY_REDIS_ADDRESS", "redis:6379")),
                             None, "spec.headGroupSpec.template.spec.containers[0].env", "implicitly enables"),
    "redis_password_env_with_ft": ("cluster", lambda d: (
        d["spec"].update(gcsFaultToleranceOptions={"redisAddress": "redis:6379"}),
        _head_env(d["spec"], ("REDIS_PASSWORD", "x"))),
        None, "spec.headGroupSpec.template.spec.containers[0].env", "REDIS_PASSWORD must not be set"),
    "storage_annotation_with_ft": ("cluster", lambda d: (
        d["metadata"].setdefault("annotations", {}).update({"ray.io/external-storage-namespace": "n"}),
        d["spec"].update(gcsFaultToleranceOptions={"redisAddress": "redis:6379"})),
        None, "metadata.annotations.ray.io/external-storage-namespace", "externalStorageNamespace"),
    "redis_username": ("cluster", lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].update(
        {"redis-username": "u"}), None, "spec.headGroupSpec", "redisUsername"),
    "suspend_gate (RayJobDeletionPolicy)": ("job", lambda d: _worker(d["spec"]["rayClusterSpec"]).update(suspend=True),
                                            _GATES_OFF, "spec.rayClusterSpec.workerGroupSpecs[0].suspend",
                                            "RayJobDeletionPolicy"),
    "v2_env_without_autoscaling": ("job", lambda d: _head_env(d["spec"]["rayClusterSpec"],
                                                              ("RAY_enable_autoscaler_v2", "true")),
                                   None, "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].env",
                                   "needs enableInTreeAutoscaling: true"),
    "suspend_with_autoscaling": ("cluster", lambda d: _worker(d["spec"]).update(suspend=True),
                                 None, "spec.workerGroupSpecs[0].suspend", "autoscaling enabled"),
    "version_and_env": ("cluster", lambda d: _head_env(d["spec"], ("RAY_enable_autoscaler_v2", "1")),
                        None, "spec.autoscalerOptions.version", "use only autoscalerOptions.version"),
    "v2_worker_restart": ("cluster", lambda d: _worker(d["spec"])["template"]["spec"].update(restartPolicy="Always"),
                          None, "spec.workerGroupSpecs[0].template.spec.restartPolicy", "Never or unset"),
    "autoscaler_idle_negative": ("cluster", lambda d: d["spec"]["autoscalerOptions"].update(idleTimeoutSeconds=-1),
                                 None, "spec.autoscalerOptions.idleTimeoutSeconds", ">= 0"),
    "token_auth_version": ("cluster", lambda d: d["spec"].update(authOptions={"mode": "token"}, rayVersion="2.46.0"),
                           None, "spec.rayVersion", ">= 2.52.0"),
    "token_auth_no_version": ("cluster", lambda d: (d["spec"].update(authOptions={"mode": "token"}),
                                                    d["spec"].pop("rayVersion", None)),
                              None, "spec.rayVersion", "required with authOptions.mode 'token'"),
    "k8s_token_auth_version": ("cluster", lambda d: d["spec"].update(
        authOptions={"mode": "token", "enableK8sTokenAuth": True}, rayVersion="2.53.0"),
        None, "spec.rayVersion", ">= 2.55.0"),
    "k8s_token_auth_mode": ("cluster", lambda d: d["spec"].update(authOptions={"enableK8sTokenAuth": True}),
                            None, "spec.authOptions.enableK8sTokenAuth", "needs authOptions.mode 'token'"),
    # ValidateRayClusterUpgradeOptions, ValidateRayClusterStatus
    "raycluster_upgrade_owner": ("cluster", lambda d: (
        d["metadata"].setdefault("labels", {}).update({"ray.io/originated-from-crd": "RayJob"}),
        d["spec"].update(upgradeStrategy={"type": "Recreate"})),
        None, "spec.upgradeStrategy", "created by a RayJob"),
    "embedded_upgrade_strategy": ("job", lambda d: d["spec"]["rayClusterSpec"].update(
        upgradeStrategy={"type": "Recreate"}), None, "spec.rayClusterSpec.upgradeStrategy", "created by a RayJob"),
    "status_suspending_and_suspended": ("cluster", lambda d: d.update(status={"conditions": [
        {"type": "RayClusterSuspending", **_COND}, {"type": "RayClusterSuspended", **_COND}]}),
        None, "status.conditions", "cannot both be True"),
    # ValidateRayJobSpec
    "suspend_needs_shutdown": ("job", lambda d: d["spec"].update(suspend=True, shutdownAfterJobFinishes=False),
                               None, "spec.suspend", "shutdownAfterJobFinishes: true"),
    "ttl_negative": ("job", lambda d: d["spec"].update(ttlSecondsAfterFinished=-1),
                     None, "spec.ttlSecondsAfterFinished", ">= 0"),
    "deletion_gate (RayJobDeletionPolicy)": ("job", lambda d: d["spec"].update(
        shutdownAfterJobFinishes=False, deletionStrategy=_rules(("SUCCEEDED", "DeleteCluster", 0))),
        _GATES_OFF, "spec.deletionStrategy", "RayJobDeletionPolicy feature gate"),
    "deletion_rules_and_shutdown": ("job", lambda d: d["spec"].update(
        shutdownAfterJobFinishes=True, deletionStrategy=_rules(("SUCCEEDED", "DeleteCluster", 0))),
        None, "spec.deletionStrategy.deletionRules", "mutually exclusive"),
    "deletion_legacy_and_rules (CEL)": ("job", lambda d: d["spec"].update(shutdownAfterJobFinishes=False, deletionStrategy={
        **_rules(("SUCCEEDED", "DeleteCluster", 0)), "onSuccess": {"policy": "DeleteCluster"}}),
        None, "spec.deletionStrategy", "cannot be used together"),
    "deletion_legacy_one_side (CEL)": ("job", lambda d: d["spec"].update(
        shutdownAfterJobFinishes=False, deletionStrategy={"onSuccess": {"policy": "DeleteCluster"}}),
        None, "spec.deletionStrategy", "BOTH onSuccess and onFailure"),
    "deletion_legacy_policy_unset": ("job", lambda d: d["spec"].update(shutdownAfterJobFinishes=False, deletionStrategy={
        "onSuccess": {}, "onFailure": {"policy": "DeleteCluster"}}),
        None, "spec.deletionStrategy.onSuccess.policy", "required"),
    "deletion_legacy_selector": ("job", lambda d: _selector(d, deletionStrategy={
        "onSuccess": {"policy": "DeleteCluster"}, "onFailure": {"policy": "DeleteNone"}}),
        None, "spec.deletionStrategy.onSuccess.policy", "not allowed with spec.clusterSelector"),
    "deletion_legacy_workers_autoscaling": ("job", lambda d: (
        d["spec"]["rayClusterSpec"].update(enableInTreeAutoscaling=True),
        d["spec"].update(shutdownAfterJobFinishes=False, deletionStrategy={
            "onSuccess": {"policy": "DeleteWorkers"}, "onFailure": {"policy": "DeleteCluster"}})),
        None, "spec.deletionStrategy.onSuccess.policy", "DeleteWorkers is not supported with autoscaling"),
    "deletion_legacy_none_with_shutdown": ("job", lambda d: d["spec"].update(shutdownAfterJobFinishes=True, deletionStrategy={
        "onSuccess": {"policy": "DeleteNone"}, "onFailure": {"policy": "DeleteCluster"}}),
        None, "spec.deletionStrategy.onSuccess.policy", "DeleteNone contradicts"),
    "deletion_condition_both (CEL)": ("job", lambda d: d["spec"].update(shutdownAfterJobFinishes=False, deletionStrategy={
        "deletionRules": [{"condition": {"jobStatus": "FAILED", "jobDeploymentStatus": "Failed"},
                           "policy": "DeleteSelf"}]}),
        None, "spec.deletionStrategy.deletionRules[0].condition", "cannot be used together"),
    "deletion_rule_selector": ("job", lambda d: _selector(d, deletionStrategy=_rules(("FAILED", "DeleteWorkers", 0))),
                               None, "spec.deletionStrategy.deletionRules[0].policy",
                               "not allowed with spec.clusterSelector"),
    "deletion_rule_workers_autoscaling": ("job", lambda d: (
        d["spec"]["rayClusterSpec"].update(enableInTreeAutoscaling=True),
        d["spec"].update(shutdownAfterJobFinishes=False, deletionStrategy=_rules(("FAILED", "DeleteWorkers", 0)))),
        None, "spec.deletionStrategy.deletionRules[0].policy", "DeleteWorkers is not supported with autoscaling"),
    "deletion_rule_duplicate": ("job", lambda d: d["spec"].update(shutdownAfterJobFinishes=False, deletionStrategy=_rules(
        ("FAILED", "DeleteSelf", 0), ("FAILED", "DeleteSelf", 60))),
        None, "spec.deletionStrategy.deletionRules[1]", "duplicate rule"),
    "deletion_rule_ttl_order": ("job", lambda d: d["spec"].update(shutdownAfterJobFinishes=False, deletionStrategy=_rules(
        ("SUCCEEDED", "DeleteCluster", 10), ("SUCCEEDED", "DeleteSelf", 5))),
        None, "spec.deletionStrategy.deletionRules", "the DeleteSelf TTL (5) must be >= the DeleteCluster TTL (10)"),
    "suspend_with_selector": ("job", lambda d: _selector(d, suspend=True, shutdownAfterJobFinishes=True),
                              None, "spec.suspend", "not supported with spec.clusterSelector"),
    "selector_without_cluster_name": ("job", lambda d: (_selector(d), d["spec"].update(clusterSelector={"team": "a"})),
                                      None, "spec.clusterSelector.ray.io/cluster", "required"),
    "selector_in_sidecar_mode": ("job", lambda d: _selector(d, submissionMode="SidecarMode"),
                                 None, "spec.submissionMode", "SidecarMode does not support spec.clusterSelector"),
    "selector_backoff_limit": ("job", lambda d: _selector(d, backoffLimit=2),
                               None, "spec.backoffLimit", "spec.clusterSelector"),
    "sidecar_submitter_template": ("job", lambda d: d["spec"].update(submissionMode="SidecarMode", submitterPodTemplate={
        "spec": {"containers": [{"name": "s", "image": "rayproject/ray"}]}}),
        None, "spec.submitterPodTemplate", "not supported in SidecarMode"),
    "sidecar_submitter_config": ("job", lambda d: d["spec"].update(submissionMode="SidecarMode",
                                                                   submitterConfig={"backoffLimit": 1}),
                                 None, "spec.submitterConfig", "not supported in SidecarMode"),
    "sidecar_head_restart": ("job", lambda d: (
        d["spec"].update(submissionMode="SidecarMode"),
        d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"].update(restartPolicy="Always")),
        None, "spec.rayClusterSpec.headGroupSpec.template.spec.restartPolicy", "SidecarMode"),
    "backoff_limit_negative": ("job", lambda d: d["spec"].update(backoffLimit=-1), None, "spec.backoffLimit", ">= 0"),
    "job_status_waiting": ("job", lambda d: d.update(status={"jobDeploymentStatus": "Waiting"}),
                           None, "status.jobDeploymentStatus", "only in InteractiveMode"),
    "managed_by (CEL)": ("job", lambda d: d["spec"].update(managedBy="someone"),
                         None, "spec.managedBy", "must be either"),
    # ValidateRayServiceMetadata / ValidateRayServiceSpec / ValidateClusterUpgradeOptions
    "initializing_timeout_format": ("service", lambda d: d["metadata"].setdefault("annotations", {}).update(
        {"ray.io/initializing-timeout": "soon"}), None, "metadata.annotations.ray.io/initializing-timeout",
        "invalid format"),
    "initializing_timeout_positive": ("service", lambda d: d["metadata"].setdefault("annotations", {}).update(
        {"ray.io/initializing-timeout": "0s"}), None, "metadata.annotations.ray.io/initializing-timeout",
        "positive"),
    "head_service_name": ("service", lambda d: d["spec"]["rayClusterConfig"]["headGroupSpec"].update(
        headService={"metadata": {"name": "mine"}}),
        None, "spec.rayClusterConfig.headGroupSpec.headService.metadata.name", "must not be set"),
    "cluster_deletion_delay": ("service", lambda d: d["spec"].update(rayClusterDeletionDelaySeconds=-1),
                               None, "spec.rayClusterDeletionDelaySeconds", ">= 0"),
    "incremental_needs_autoscaling": ("service", lambda d: d["spec"].update(upgradeStrategy={
        "type": "NewClusterWithIncrementalUpgrade", "clusterUpgradeOptions": {
            "gatewayClassName": "istio", "stepSizePercent": 10, "intervalSeconds": 30}}),
        None, "spec.rayClusterConfig.enableInTreeAutoscaling", "needs the Ray autoscaler"),
    "incremental_needs_options": ("service", lambda d: (
        d["spec"]["rayClusterConfig"].update(enableInTreeAutoscaling=True),
        d["spec"].update(upgradeStrategy={"type": "NewClusterWithIncrementalUpgrade"})),
        None, "spec.upgradeStrategy.clusterUpgradeOptions", "required"),
    "incremental_gateway_class": ("service", lambda d: (
        d["spec"]["rayClusterConfig"].update(enableInTreeAutoscaling=True),
        d["spec"].update(upgradeStrategy={"type": "NewClusterWithIncrementalUpgrade", "clusterUpgradeOptions": {
            "gatewayClassName": "", "stepSizePercent": 10, "intervalSeconds": 30}})),
        None, "spec.upgradeStrategy.clusterUpgradeOptions.gatewayClassName", "required"),
}


@pytest.mark.parametrize("case", RULE_CASES.values(), ids=RULE_CASES.keys())
def test_each_operator_rule_names_its_path(case, request):
    fixture, mutate, gates, path, words = case
    doc = copy.deepcopy(request.getfixturevalue(fixture))
    assert validate_manifest(doc, feature_gates=gates) == []
    mutate(doc)
    issues = validate_manifest(doc, feature_gates=gates)
    assert any(i.path == path and words in i.message for i in issues), [str(i) for i in issues]


def test_gated_rules_follow_the_feature_gates(job, service):
    job["spec"].update(shutdownAfterJobFinishes=False, deletionStrategy=_rules(("SUCCEEDED", "DeleteCluster", 0)))
    assert validate_manifest(job) == []  # gates not given count as enabled
    assert validate_manifest(job, feature_gates={"RayJobDeletionPolicy": True}) == []
    assert _paths(validate_manifest(job, feature_gates={"RayJobDeletionPolicy": False})) == ["spec.deletionStrategy"]
    service["spec"]["upgradeStrategy"] = {"type": "NewClusterWithIncrementalUpgrade"}
    assert validate_manifest(service, feature_gates={"RayServiceIncrementalUpgrade": False}) == []
    assert validate_manifest(service) != []
    from raymlp.errors import SpecError

    with pytest.raises(SpecError, match="feature_gates must be one of"):
        validate_manifest(service, feature_gates={"NoSuchGate": True})


@pytest.mark.parametrize("value", ["90", "5m", "1h30m", "1.5h", "300ms"])
def test_initializing_timeout_takes_go_durations_and_seconds(service, value):
    service["metadata"].setdefault("annotations", {})["ray.io/initializing-timeout"] = value
    assert validate_manifest(service) == []
