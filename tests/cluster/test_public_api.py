import raymlp.cluster


def test_public_surface_is_pinned():
    assert sorted(raymlp.cluster.__all__) == sorted([
        "KUBERAY_VERSION",
        "Autoscaling",
        "GcsFaultTolerance",
        "HeadGroup",
        "KubeRayClient",
        "KubernetesError",
        "ResourceStatus",
        "RayClusterSpec",
        "RayJobSpec",
        "RayServiceSpec",
        "ServeApplication",
        "WorkerGroup",
        "ValidationIssue",
        "JobConnectionError",
        "is_ray_resource",
        "validate_manifest",
        "connect",
        "submit_job",
        "follow_job",
        "to_yaml",
    ])
    for name in raymlp.cluster.__all__:
        assert getattr(raymlp.cluster, name) is not None, name


def test_errors_cross_process_boundaries_intact():
    import pickle

    from raymlp.errors import SpecError

    err = raymlp.cluster.KubernetesError("create failed: HTTP 403", status=403)
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.status) == ("create failed: HTTP 403", 403)
    try:
        raymlp.cluster.WorkerGroup(name="g", replicas=-1)
    except SpecError as exc:
        back = pickle.loads(pickle.dumps(exc))
        assert back.field == "WorkerGroup.replicas" and back.value == -1
