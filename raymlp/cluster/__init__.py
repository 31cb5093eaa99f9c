"""raymlp.cluster: KubeRay resources, their validation, and Ray job submission.

Specs render ``ray.io/v1`` manifests that are validated against the KubeRay CRD schemas and
the operator's cross-field rules before anything is sent::

    from raymlp import cluster

    job = cluster.RayJobSpec(
        name="digits",
        entrypoint="python train.py",
        cluster=cluster.RayClusterSpec(workers=[cluster.WorkerGroup(name="gpu", replicas=4, gpus=4)]),
        results=cluster.ResultStore(),         # cluster/mlflow: tracking server + S3 storage
    )
    client = cluster.KubeRayClient(namespace="team-a")
    handle = client.apply(job)                 # server-side apply; dry_run="All" checks only
    handle.wait(timeout_s=3600)

Results outlive the cluster: a :class:`ResultStore` (by default the ``cluster/mlflow``
services) gives every pod the tracking server and the S3 storage root; a job on a cluster that
is deleted after it refuses to render with a local tracking store. On a stock ``rayproject/ray``
image raymlp travels with the job (``runtime="ship"``: its package and the requirements read
from its metadata), or comes with the image of ``cluster/image/Dockerfile`` (``"image"``).

Jobs can also go straight to any Ray cluster through Ray's Job Submission API
(:func:`submit_job`, the ``raymlp submit`` command, token-authenticated heads included);
:func:`dashboard_url` finds its job API from the cluster's address.
"""

from raymlp.cluster._client import ClusterResource, KubeRayClient, ResourceStatus
from raymlp.cluster._crds import KUBERAY_VERSION
from raymlp.cluster._specs import (
    Autoscaling,
    GcsFaultTolerance,
    HeadGroup,
    RayClusterSpec,
    RayJobSpec,
    RayServiceSpec,
    ResultStore,
    ServeApplication,
    WorkerGroup,
    to_yaml,
)
from raymlp.cluster._submit import connect, dashboard_url, follow_job, submit_job
from raymlp.cluster._validate import ValidationIssue, is_ray_resource, validate_manifest
from raymlp.errors import JobConnectionError, KubernetesError  # re-exported: raised by this package

__all__ = [
    "KUBERAY_VERSION",
    "Autoscaling",
    "ClusterResource",
    "GcsFaultTolerance",
    "HeadGroup",
    "JobConnectionError",
    "KubeRayClient",
    "KubernetesError",
    "RayClusterSpec",
    "RayJobSpec",
    "RayServiceSpec",
    "ResourceStatus",
    "ResultStore",
    "ServeApplication",
    "ValidationIssue",
    "WorkerGroup",
    "connect",
    "dashboard_url",
    "follow_job",
    "is_ray_resource",
    "submit_job",
    "to_yaml",
    "validate_manifest",
]
