"""The public surface of raymlp.cluster, and its errors across process boundaries."""

import pickle

import pytest

import raymlp.cluster
import raymlp.errors
from raymlp.errors import SpecError


def test_public_surface_is_pinned():
    assert sorted(raymlp.cluster.__all__) == sorted([
        "KUBERAY_VERSION",
        "Autoscaling",
        "GcsFaultTolerance",
        "HeadGroup",
        "KubeRayClient",
        "ClusterResource",
        "KubernetesError",
        "ResourceStatus",
        "RayClusterSpec",
        "RayJobSpec",
        "RayServiceSpec",
        "ResultStore",
        "ServeApplication",
        "WorkerGroup",
        "ValidationIssue",
        "JobConnectionError",
        "is_ray_resource",
        "validate_manifest",
        "connect",
        "dashboard_url",
        "submit_job",
        "follow_job",
        "to_yaml",
    ])
    for name in raymlp.cluster.__all__:
        assert getattr(raymlp.cluster, name) is not None, name
    # The errors are raymlp.errors' own, re-exported where the cluster API raises them.
    assert raymlp.cluster.KubernetesError is raymlp.errors.KubernetesError
    assert raymlp.cluster.JobConnectionError is raymlp.errors.JobConnectionError


def test_errors_cross_process_boundaries_intact():
    err = raymlp.cluster.KubernetesError("create failed: HTTP 403", status=403)
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.status) == ("create failed: HTTP 403", 403)
    with pytest.raises(SpecError) as info:
        raymlp.cluster.WorkerGroup(name="g", replicas=-1)
    back = pickle.loads(pickle.dumps(info.value))
    assert (back.field, back.value, back.allowed) == ("WorkerGroup.replicas", -1, "an integer >= 0")
