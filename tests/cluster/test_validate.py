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
