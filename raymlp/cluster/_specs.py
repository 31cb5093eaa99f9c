"""Specs for Ray clusters, jobs and services on KubeRay, rendered to ``ray.io/v1`` manifests.

A spec is a frozen, keyword-only dataclass checked in ``__post_init__``; ``render()`` builds
the manifest as plain data and runs it through :func:`raymlp.cluster.validate_manifest`, so a
rendered manifest is valid against the KubeRay CRD and the operator's rules by construction.
The CRD schema is the serialization contract here; it is stricter and more complete than a
hand-written pydantic model of it would be, so the manifest is built as dicts and checked.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import yaml

from raymlp._spec import boolean, choice, fail, instance, integer, mapping, number, string
from raymlp.cluster import _ship
from raymlp.cluster._validate import MAX_NAME_LENGTH, SUBMISSION_MODES, validate_manifest
from raymlp.errors import SpecError

__all__ = [
    "Autoscaling",
    "GcsFaultTolerance",
    "HeadGroup",
    "RayClusterSpec",
    "RayJobSpec",
    "RayServiceSpec",
    "ResultStore",
    "ServeApplication",
    "WorkerGroup",
    "to_yaml",
]

try:
    #: The Ray version clusters default to: the one raymlp runs with here, so client and
    #: cluster agree (Ray requires the same version on both sides of a job submission).
    DEFAULT_RAY_VERSION = version("ray")
except PackageNotFoundError:  # pragma: no cover - ray is a core dependency
    DEFAULT_RAY_VERSION = "2.60.0"

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_VERSION_TAG = re.compile(r"^(\d+\.\d+\.\d+)")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*[:.][A-Za-z_]\w*$")
Number = int | float


def _k8s_name(field: str, value: Any, limit: int, *, optional: bool = False) -> Any:
    """A DNS-1035 label (Kubernetes object and group names start with a letter)."""
    return string(field, value, optional=optional, pattern=_DNS1035, max_length=limit,
                  allowed=f"a DNS-1035 label of at most {limit} characters (lower-case letters, digits "
                          "and '-', starting with a letter)")


_QUANTITY_ALLOWED = "a number or a Kubernetes quantity string such as '500m' or '4Gi'"


def _quantity(field: str, value: Any, *, allow_zero: bool = False) -> str:
    """A Kubernetes quantity string from a number (CPUs, bytes) or a quantity string."""
    if isinstance(value, str):
        string(field, value, pattern=_QUANTITY, allowed=_QUANTITY_ALLOWED)
        return value
    number(field, value, minimum=0, strict=not allow_zero)
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def _scalar(field: str, value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)) or value is None:
        raise fail(field, value, "a string (or a number/bool, which is quoted)")
    return value


def _str_map(field: str, value: Any) -> dict[str, str]:
    """A mapping of strings; KubeRay wants rayStartParams/env/labels values as strings, so
    scalars are quoted for the user."""
    mapping(field, value, values=_scalar)
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}


def _tolerations(field: str, value: Any) -> tuple[dict[str, Any], ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or \
            not all(isinstance(t, Mapping) for t in value):
        raise fail(field, value, "a sequence of toleration mappings ({'key': ..., 'effect': ...})")
    return tuple(dict(t) for t in value)


def _sequence_of(field: str, value: Any, kind: type, *, non_empty: bool = False) -> tuple:
    items = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if items is None or not all(isinstance(i, kind) for i in items) or (non_empty and not items):
        raise fail(field, value, f"a {'non-empty ' if non_empty else ''}sequence of {kind.__name__}")
    return items


@dataclasses.dataclass(frozen=True, kw_only=True)
class _PodGroup:
    cpus: Number | str = 1
    memory: int | str = "2Gi"
    gpus: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    tolerations: Sequence[Mapping[str, Any]] = ()
    node_selector: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ray_start_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    env: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def _check_pod(self, owner: str) -> None:
        _quantity(f"{owner}.cpus", self.cpus)
        _quantity(f"{owner}.memory", self.memory)
        integer(f"{owner}.gpus", self.gpus, minimum=0)
        string(f"{owner}.gpu_resource", self.gpu_resource, pattern=r"[^/\s]+/[^/\s]+",
               allowed="an extended resource name like 'nvidia.com/gpu'")
        object.__setattr__(self, "tolerations", _tolerations(f"{owner}.tolerations", self.tolerations))
        object.__setattr__(self, "node_selector", _str_map(f"{owner}.node_selector", self.node_selector))
        object.__setattr__(
            self, "ray_start_params", _str_map(f"{owner}.ray_start_params", self.ray_start_params)
        )
        object.__setattr__(self, "env", _str_map(f"{owner}.env", self.env))

    def _pod_template(self, *, container: str, image: str, ports: Sequence[tuple[str, int]],
                      restart_never: bool, extra_env: Mapping[str, str] = {},
                      secret_env: Mapping[str, tuple[str, str]] = {}) -> dict[str, Any]:
        resources = {"cpu": _quantity("cpus", self.cpus), "memory": _quantity("memory", self.memory)}
        if self.gpus:
            resources[self.gpu_resource] = str(self.gpus)
        main: dict[str, Any] = {
            "name": container,
            "image": image,
            # Requests equal to limits: Ray sizes itself from the limits, and a Guaranteed pod
            # is not the first to be evicted under memory pressure.
            "resources": {"limits": dict(resources), "requests": dict(resources)},
        }
        env = {**extra_env, **self.env}  # the group's own env wins
        items = [{"name": k, "value": v} for k, v in env.items()]
        items += [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
                  for k, (secret, key) in secret_env.items() if k not in env]
        if items:
            main["env"] = items
        if ports:
            main["ports"] = [{"name": n, "containerPort": p} for n, p in ports]
        pod: dict[str, Any] = {"containers": [main]}
        if self.tolerations:
            pod["tolerations"] = [dict(t) for t in self.tolerations]
        if self.gpus and not any(t.get("key") == self.gpu_resource for t in self.tolerations):
            # GPU node pools are usually tainted with the GPU resource name.
            pod["tolerations"] = [
                *pod.get("tolerations", []),
                {"key": self.gpu_resource, "operator": "Exists", "effect": "NoSchedule"},
            ]
        if self.node_selector:
            pod["nodeSelector"] = dict(self.node_selector)
        if restart_never:
            pod["restartPolicy"] = "Never"
        return {"spec": pod}


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeadGroup(_PodGroup):
    """The head pod of a Ray cluster.

    Args:
        cpus: CPU limit of the pod (number or quantity string).
        memory: memory limit of the pod (a quantity string such as ``"8Gi"``, or bytes).
        gpus: GPUs on the head pod (usually 0).
        gpu_resource: the extended resource name of the GPUs.
        ray_cpus: CPUs the head advertises to Ray. The default 0 keeps tasks and actors off the
            head, so GCS and the dashboard never compete with training; None lets Ray use all.
        tolerations: pod tolerations.
        node_selector: pod node selector.
        ray_start_params: extra ``ray start`` parameters (values are rendered as strings).
        env: environment variables of the Ray container.
        service_type: Kubernetes Service type of the head service (e.g. ``"ClusterIP"``).

    Example:
        >>> HeadGroup(cpus=4, memory="8Gi").ray_cpus
        0
    """

    cpus: Number | str = 2
    memory: int | str = "4Gi"
    ray_cpus: int | None = 0
    service_type: str | None = None

    def __post_init__(self) -> None:
        self._check_pod("HeadGroup")
        integer("HeadGroup.ray_cpus", self.ray_cpus, minimum=0, optional=True)
        choice("HeadGroup.service_type", self.service_type, ("ClusterIP", "NodePort", "LoadBalancer"), optional=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerGroup(_PodGroup):
    """A group of identical Ray worker pods.

    Args:
        name: the group name (a DNS-1035 label).
        replicas: pods to start with.
        min_replicas: the autoscaler's lower bound (default: ``replicas``).
        max_replicas: the autoscaler's upper bound (default: ``replicas``).
        cpus: CPU limit per pod (number or quantity string).
        memory: memory limit per pod (a quantity string such as ``"8Gi"``, or bytes).
        gpus: GPUs per pod, rendered as the ``gpu_resource`` limit.
        gpu_resource: ``"nvidia.com/gpu"`` unless the nodes expose another name.
        tolerations: pod tolerations (GPU groups also tolerate the GPU taint).
        node_selector: pod node selector, e.g. a GPU node pool's label.
        ray_start_params: extra ``ray start`` parameters.
        env: environment variables of the Ray container.

    Raises:
        SpecError: on a bad name or ``min_replicas <= replicas <= max_replicas`` not holding.

    Example:
        >>> WorkerGroup(name="gpu", replicas=4, gpus=4).max_replicas
        4
    """

    name: str
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None

    def __post_init__(self) -> None:
        _k8s_name("WorkerGroup.name", self.name, 63)
        self._check_pod(f"WorkerGroup[{self.name}]")
        integer("WorkerGroup.replicas", self.replicas, minimum=0)
        low = self.replicas if self.min_replicas is None else self.min_replicas
        high = self.replicas if self.max_replicas is None else self.max_replicas
        integer("WorkerGroup.min_replicas", low, minimum=0)
        integer("WorkerGroup.max_replicas", high, minimum=0)
        if low > high:
            raise fail("WorkerGroup.min_replicas", low, f"<= max_replicas ({high})")
        if not low <= self.replicas <= high:
            raise fail("WorkerGroup.replicas", self.replicas, f"between min_replicas ({low}) and max_replicas ({high})")
        object.__setattr__(self, "min_replicas", low)
        object.__setattr__(self, "max_replicas", high)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Autoscaling:
    """KubeRay's in-tree Ray autoscaler.

    Args:
        version: ``"v2"`` (default; the autoscaler Ray recommends) or ``"v1"``.
        idle_timeout_s: seconds a worker stays idle before it is removed.
        upscaling_mode: ``"Default"``, ``"Aggressive"`` or ``"Conservative"``.
    """

    version: str = "v2"
    idle_timeout_s: int = 60
    upscaling_mode: str = "Default"

    def __post_init__(self) -> None:
        choice("Autoscaling.version", self.version, ("v1", "v2"))
        # The operator's idleTimeoutSeconds is an integer of seconds.
        integer("Autoscaling.idle_timeout_s", self.idle_timeout_s, minimum=0)
        choice("Autoscaling.upscaling_mode", self.upscaling_mode, ("Default", "Aggressive", "Conservative"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class GcsFaultTolerance:
    """GCS fault tolerance with an external Redis, so the cluster survives a head pod restart.

    Args:
        redis_address: ``host:port`` (or ``redis://``/``rediss://`` URL) of the Redis.
        password_secret: name of a Secret holding the Redis password (recommended), or None.
        password_key: the key in that Secret.
        external_storage_namespace: Redis key namespace; set it to keep a cluster's state when
            the RayCluster is re-created under another name.
    """

    redis_address: str
    password_secret: str | None = None
    password_key: str = "password"
    external_storage_namespace: str | None = None

    def __post_init__(self) -> None:
        string("GcsFaultTolerance.redis_address", self.redis_address, pattern=r"(rediss?://)?[^\s:/]+(:\d+)?/?",
               allowed="'host:port' or a redis:// URL")
        _k8s_name("GcsFaultTolerance.password_secret", self.password_secret, 253, optional=True)
        string("GcsFaultTolerance.password_key", self.password_key)
        string("GcsFaultTolerance.external_storage_namespace", self.external_storage_namespace, optional=True)

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {"redisAddress": self.redis_address}
        if self.password_secret:
            out["redisPassword"] = {
                "valueFrom": {"secretKeyRef": {"name": self.password_secret, "key": self.password_key}}
            }
        if self.external_storage_namespace:
            out["externalStorageNamespace"] = self.external_storage_namespace
        return out

#: The services of ``cluster/mlflow`` as seen from any namespace.
MLFLOW_TRACKING_URI = "http://mlflow.mlflow.svc:5000"
MLFLOW_S3_ENDPOINT = "http://minio.mlflow.svc:9000"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResultStore:
    """Where jobs on a cluster keep what must outlive it: runs, checkpoints and models.

    The defaults are the services of ``cluster/mlflow``: its MLflow tracking server, and its
    S3-compatible object store (MinIO) for the storage root, with the credentials in the team
    namespace's ``raymlp-storage`` Secret (``cluster/team``). Rendered as environment variables
    of every Ray pod (``RAYMLP_TRACKING_URI``, ``RAYMLP_STORAGE_ROOT``, ``AWS_ENDPOINT_URL``,
    ``MLFLOW_S3_ENDPOINT_URL``) and Secret references (``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``), so drivers and workers find them without configuration.

    Args:
        tracking_uri: the MLflow tracking server.
        storage_root: the root of checkpoints, models and packaged code (an fsspec URL).
        s3_endpoint: the S3 API endpoint of a non-AWS store (None: AWS S3).
        credentials_secret: a Secret with ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``
            (None: the pods' own credentials, e.g. an IAM role).
        experiment: the default MLflow experiment of the jobs (None: raymlp's default).

    Example:
        >>> ResultStore().env()["RAYMLP_TRACKING_URI"]
        'http://mlflow.mlflow.svc:5000'
    """

    tracking_uri: str = MLFLOW_TRACKING_URI
    storage_root: str = "s3://mlflow/raymlp"
    s3_endpoint: str | None = MLFLOW_S3_ENDPOINT
    credentials_secret: str | None = "raymlp-storage"
    experiment: str | None = None

    def __post_init__(self) -> None:
        string("ResultStore.tracking_uri", self.tracking_uri)
        string("ResultStore.storage_root", self.storage_root)
        string("ResultStore.s3_endpoint", self.s3_endpoint, optional=True, pattern=r"https?://\S+",
               allowed="an http(s):// URL")
        _k8s_name("ResultStore.credentials_secret", self.credentials_secret, 253, optional=True)
        string("ResultStore.experiment", self.experiment, optional=True)

    @property
    def local(self) -> list[str]:
        """The fields that name one machine's disk (a file or sqlite URI, a path)."""
        from raymlp.cluster._submit import is_local_uri

        return [f"ResultStore.{name}" for name in ("tracking_uri", "storage_root")
                if is_local_uri(getattr(self, name))]

    def env(self) -> dict[str, str]:
        """The plain environment variables of the pods."""
        out = {"RAYMLP_TRACKING_URI": self.tracking_uri, "RAYMLP_STORAGE_ROOT": self.storage_root}
        if self.s3_endpoint:
            out["AWS_ENDPOINT_URL"] = self.s3_endpoint  # boto3/s3fs (checkpoints, models)
            out["MLFLOW_S3_ENDPOINT_URL"] = self.s3_endpoint  # MLflow's S3 artifact client
        if self.experiment:
            out["RAYMLP_EXPERIMENT"] = self.experiment
        return out

    def secret_env(self) -> dict[str, tuple[str, str]]:
        """Environment variables read from the credentials Secret: name -> (secret, key)."""
        if not self.credentials_secret:
            return {}
        return {k: (self.credentials_secret, k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


def _image_version(image: str) -> str | None:
    tag = image.rsplit("/", 1)[-1].partition(":")[2].partition("@")[0]
    match = _VERSION_TAG.match(tag)
    return match.group(1) if match else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class RayClusterSpec:
    """A Ray cluster on KubeRay: one head and any number of worker groups.

    Args:
        name: the RayCluster name (at most 53 characters); may be None when the cluster is
            embedded in a :class:`RayJobSpec` or :class:`RayServiceSpec`.
        namespace: the Kubernetes namespace (None: the client's default).
        ray_version: the Ray version of the image; KubeRay uses it to pick features.
        image: the container image; default ``rayproject/ray:<ray_version>`` (``-gpu`` when a
            group has GPUs). A versioned tag must agree with ``ray_version``.
        head: the head group.
        workers: the worker groups.
        autoscaling: enable the in-tree autoscaler (None: fixed size).
        gcs_fault_tolerance: GCS fault tolerance with an external Redis (None: off).
        results: where jobs on the cluster track runs and keep checkpoints and models
            (rendered as every pod's environment, credentials as Secret references); None:
            nowhere outside the pods (their local disk, which goes with the cluster).
        labels: metadata labels.
        annotations: metadata annotations.

    Raises:
        SpecError: naming the field, the value and what is allowed.

    Example:
        >>> spec = RayClusterSpec(name="team-a", workers=[WorkerGroup(name="cpu", replicas=2)])
        >>> spec.render()["spec"]["workerGroupSpecs"][0]["replicas"]
        2
    """

    name: str | None = None
    namespace: str | None = None
    ray_version: str = DEFAULT_RAY_VERSION
    image: str | None = None
    head: HeadGroup = dataclasses.field(default_factory=HeadGroup)
    workers: Sequence[WorkerGroup] = ()
    autoscaling: Autoscaling | None = None
    gcs_fault_tolerance: GcsFaultTolerance | None = None
    results: ResultStore | None = None
    labels: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    annotations: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _k8s_name("RayClusterSpec.name", self.name, MAX_NAME_LENGTH["RayCluster"], optional=True)
        _k8s_name("RayClusterSpec.namespace", self.namespace, 63, optional=True)
        string("RayClusterSpec.ray_version", self.ray_version, pattern=r"\d+\.\d+\.\d+.*",
               allowed="a Ray version like '2.60.0'")
        instance("RayClusterSpec.head", self.head, HeadGroup, what="a HeadGroup")
        workers = _sequence_of("RayClusterSpec.workers", self.workers, WorkerGroup)
        names = [w.name for w in workers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise fail("RayClusterSpec.workers", dupes, "worker groups with unique names")
        object.__setattr__(self, "workers", workers)
        if self.image is not None:
            string("RayClusterSpec.image", self.image, allowed="a container image reference")
            tagged = _image_version(self.image)
            if tagged is not None and tagged != self.ray_version:
                raise SpecError(
                    f"RayClusterSpec.image {self.image!r} carries Ray {tagged} but ray_version is "
                    f"{self.ray_version!r}; they must agree (KubeRay picks features by rayVersion)",
                    field="RayClusterSpec.image",
                    value=self.image,
                )
        instance("RayClusterSpec.autoscaling", self.autoscaling, Autoscaling, what="an Autoscaling", optional=True)
        instance("RayClusterSpec.gcs_fault_tolerance", self.gcs_fault_tolerance, GcsFaultTolerance,
                 what="a GcsFaultTolerance", optional=True)
        instance("RayClusterSpec.results", self.results, ResultStore, what="a ResultStore", optional=True)
        object.__setattr__(self, "labels", _str_map("RayClusterSpec.labels", self.labels))
        object.__setattr__(self, "annotations", _str_map("RayClusterSpec.annotations", self.annotations))

    @property
    def resolved_image(self) -> str:
        """The image every pod runs."""
        if self.image:
            return self.image
        gpu = self.head.gpus or any(w.gpus for w in self.workers)
        return f"rayproject/ray:{self.ray_version}{'-gpu' if gpu else ''}"

    def cluster_spec(self, *, extra_head_ports: Sequence[tuple[str, int]] = (),
                     results: ResultStore | None = None) -> dict[str, Any]:
        """The body of a RayCluster ``spec`` (also embedded in RayJob and RayService)."""
        image = self.resolved_image
        results = results or self.results
        env = results.env() if results else {}
        secret_env = results.secret_env() if results else {}
        v2 = self.autoscaling is not None and self.autoscaling.version == "v2"
        head_params = {"dashboard-host": "0.0.0.0"}
        if self.head.ray_cpus is not None:
            head_params["num-cpus"] = str(self.head.ray_cpus)
        head_params.update(self.head.ray_start_params)
        ports = [("gcs-server", 6379), ("dashboard", 8265), ("client", 10001), *extra_head_ports]
        head: dict[str, Any] = {
            "rayStartParams": head_params,
            "template": self.head._pod_template(container="ray-head", image=image, ports=ports, restart_never=v2,
                                                extra_env=env, secret_env=secret_env),
        }
        if self.head.service_type:
            head["serviceType"] = self.head.service_type
        spec: dict[str, Any] = {"rayVersion": self.ray_version, "headGroupSpec": head}
        if self.autoscaling is not None:
            spec["enableInTreeAutoscaling"] = True
            spec["autoscalerOptions"] = {
                "version": self.autoscaling.version,
                "idleTimeoutSeconds": self.autoscaling.idle_timeout_s,
                "upscalingMode": self.autoscaling.upscaling_mode,
            }
        if self.gcs_fault_tolerance is not None:
            spec["gcsFaultToleranceOptions"] = self.gcs_fault_tolerance.render()
        spec["workerGroupSpecs"] = [
            {
                "groupName": w.name,
                "replicas": w.replicas,
                "minReplicas": w.min_replicas,
                "maxReplicas": w.max_replicas,
                "rayStartParams": dict(w.ray_start_params),
                "template": w._pod_template(container="ray-worker", image=image, ports=(), restart_never=v2,
                                            extra_env=env, secret_env=secret_env),
            }
            for w in self.workers
        ]
        return spec

    def render(self) -> dict[str, Any]:
        """The ``ray.io/v1`` RayCluster manifest, validated.

        Raises:
            SpecError: when ``name`` is unset or the manifest breaks a CRD/operator rule.
        """
        if self.name is None:
            raise fail("RayClusterSpec.name", None, "set to render a standalone RayCluster")
        return _finish("RayCluster", self.name, self.namespace, self.labels, self.annotations, self.cluster_spec())


def _runtime_env(field: str, working_dir: str | None, pip: Sequence[str], env_vars: Mapping[str, Any],
                 extra: Mapping[str, Any]) -> dict[str, Any]:
    mapping(f"{field}.runtime_env", extra)
    env: dict[str, Any] = dict(extra)
    if working_dir is not None:
        string(f"{field}.working_dir", working_dir, allowed="a path or a remote URI (https://, s3://, gs://)")
        env["working_dir"] = working_dir
    if isinstance(pip, str) or not all(isinstance(p, str) and p for p in pip):
        raise fail(f"{field}.pip", pip, "a sequence of pip requirement strings")
    if pip:
        env["pip"] = list(pip)
    if env_vars:
        env["env_vars"] = _str_map(f"{field}.env_vars", env_vars)
    return env


@dataclasses.dataclass(frozen=True, kw_only=True)
class RayJobSpec:
    """A Ray job on KubeRay, on a new cluster or on an existing one.

    Args:
        name: the RayJob name (at most 47 characters).
        entrypoint: the command (a string, or an argv list that is shell-quoted).
        cluster: run on a new cluster with this spec (its name/namespace are ignored).
        existing_cluster: run on the existing RayCluster of this name instead.
        namespace: the Kubernetes namespace.
        working_dir: the runtime environment's working_dir (a remote URI on Kubernetes).
        pip: pip requirements installed into the job's runtime environment.
        env_vars: environment variables of the job.
        runtime_env: further runtime environment fields.
        shutdown_after_finish: delete the new cluster when the job finishes.
        ttl_after_finished_s: seconds to keep the cluster after the job (needs
            ``shutdown_after_finish``).
        backoff_limit: retries of a failed job (each on a fresh cluster).
        active_deadline_s: seconds after which the job fails when still running (None: no limit).
        submission_mode: ``K8sJobMode`` (default), ``HTTPMode``, ``InteractiveMode`` or ``SidecarMode``.
        results: where the job tracks its run and keeps checkpoints and its model (default: the
            cluster's ``results``); a new cluster gets it as pod environment, an existing one as
            the job's ``env_vars``.
        runtime: how the job gets raymlp: ``"ship"`` (raymlp's package and requirements in the
            runtime environment, for a stock ``rayproject/ray`` image; the package is uploaded
            under ``results.storage_root`` by ``raymlp cluster apply``) or ``"image"`` (the
            image has raymlp: ``cluster/image/Dockerfile``). Default: ``"image"`` when the
            cluster names an ``image``, else ``"ship"``.
        extras: raymlp extras the job uses (shipped with it; ``s3`` is added for an S3 storage
            root).
        allow_local_results: render even though the run would be tracked into a file on a
            cluster deleted after the job (``shutdown_after_finish``).
        labels: metadata labels.
        annotations: metadata annotations.

    Raises:
        SpecError: naming the field, the value and what is allowed.

    Example:
        >>> RayJobSpec(name="hello", entrypoint="python -c 'print(1)'",
        ...            existing_cluster="team-a").render()["spec"]["clusterSelector"]
        {'ray.io/cluster': 'team-a'}
    """

    name: str
    entrypoint: str | Sequence[str]
    cluster: RayClusterSpec | None = None
    existing_cluster: str | None = None
    namespace: str | None = None
    working_dir: str | None = None
    pip: Sequence[str] = ()
    env_vars: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    runtime_env: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    shutdown_after_finish: bool = True
    ttl_after_finished_s: int = 0
    backoff_limit: int = 0
    active_deadline_s: int | None = None
    submission_mode: str = "K8sJobMode"
    results: ResultStore | None = None
    runtime: str | None = None
    extras: Sequence[str] = ("torch",)
    allow_local_results: bool = False
    labels: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    annotations: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _k8s_name("RayJobSpec.name", self.name, MAX_NAME_LENGTH["RayJob"])
        _k8s_name("RayJobSpec.namespace", self.namespace, 63, optional=True)
        entry = self.entrypoint
        if not isinstance(entry, str):
            if not isinstance(entry, Sequence) or not all(isinstance(a, str) for a in entry):
                raise fail("RayJobSpec.entrypoint", entry, "a command string or a list of strings")
            entry = shlex.join(entry)
        if not entry.strip():
            raise fail("RayJobSpec.entrypoint", self.entrypoint, "a non-empty command")
        object.__setattr__(self, "entrypoint", entry)
        if (self.cluster is None) == (self.existing_cluster is None):
            given = "neither" if self.cluster is None else "both"
            raise SpecError(
                "RayJobSpec.cluster (run on a new cluster) and RayJobSpec.existing_cluster (run on an "
                f"existing one): exactly one must be set, got {given}",
                field="RayJobSpec.cluster",
                value=self.cluster,
            )
        instance("RayJobSpec.cluster", self.cluster, RayClusterSpec, what="a RayClusterSpec", optional=True)
        _k8s_name("RayJobSpec.existing_cluster", self.existing_cluster, MAX_NAME_LENGTH["RayCluster"], optional=True)
        object.__setattr__(self, "pip", tuple(self.pip) if not isinstance(self.pip, str) else self.pip)
        _runtime_env("RayJobSpec", self.working_dir, self.pip, self.env_vars, self.runtime_env)
        boolean("RayJobSpec.shutdown_after_finish", self.shutdown_after_finish)
        # The operator's TTL and deadline are integers of seconds.
        integer("RayJobSpec.ttl_after_finished_s", self.ttl_after_finished_s, minimum=0)
        if self.ttl_after_finished_s and not self.shutdown_after_finish:
            raise fail("RayJobSpec.ttl_after_finished_s", self.ttl_after_finished_s,
                       "0 unless shutdown_after_finish=True (there is no cluster to delete otherwise)")
        if self.existing_cluster is not None and self.shutdown_after_finish:
            # An existing cluster is not the job's to delete; the operator ignores the flag.
            object.__setattr__(self, "shutdown_after_finish", False)
        integer("RayJobSpec.backoff_limit", self.backoff_limit, minimum=0)
        integer("RayJobSpec.active_deadline_s", self.active_deadline_s, minimum=1, optional=True)
        choice("RayJobSpec.submission_mode", self.submission_mode, SUBMISSION_MODES)
        if self.submission_mode == "InteractiveMode" and self.backoff_limit:
            raise fail("RayJobSpec.backoff_limit", self.backoff_limit, "0 in InteractiveMode")
        if self.existing_cluster is not None and self.backoff_limit:
            raise fail("RayJobSpec.backoff_limit", self.backoff_limit, "0 on an existing cluster")
        instance("RayJobSpec.results", self.results, ResultStore, what="a ResultStore", optional=True)
        if self.results is None and self.cluster is not None and self.cluster.results is not None:
            object.__setattr__(self, "results", self.cluster.results)
        runtime = self.runtime or ("image" if self.cluster is not None and self.cluster.image else "ship")
        object.__setattr__(self, "runtime", choice("RayJobSpec.runtime", runtime, _ship.RUNTIMES))
        object.__setattr__(self, "extras", _extras("RayJobSpec.extras", self.extras))
        boolean("RayJobSpec.allow_local_results", self.allow_local_results)
        _check_results("RayJobSpec", self.results, self.env_vars, self.runtime_env,
                       ephemeral=self.cluster is not None and self.shutdown_after_finish,
                       allowed=self.allow_local_results)
        object.__setattr__(self, "labels", _str_map("RayJobSpec.labels", self.labels))
        object.__setattr__(self, "annotations", _str_map("RayJobSpec.annotations", self.annotations))

    def uploads(self) -> list[tuple[str, str, str | None]]:
        """(local folder, URI, folder name inside) of the code ``render()`` refers to by URI:
        ``raymlp cluster apply`` packages and uploads them before applying the manifest."""
        return _code(self.runtime, self.working_dir, self.results, "RayJobSpec")[1]

    def render(self) -> dict[str, Any]:
        """The ``ray.io/v1`` RayJob manifest, validated."""
        spec: dict[str, Any] = {"entrypoint": self.entrypoint}
        env = _runtime_env("RayJobSpec", self.working_dir, self.pip, self.env_vars, self.runtime_env)
        code, _ = _code(self.runtime, self.working_dir, self.results, "RayJobSpec")
        env.update(code)
        if self.results is not None and self.existing_cluster is not None:
            env["env_vars"] = {**self.results.env(), **env.get("env_vars", {})}
        env = _ship.runtime_env(env, runtime=self.runtime, extras=self._extras_used(),
                                field="RayJobSpec.runtime", package=None)
        if env:
            spec["runtimeEnvYAML"] = yaml.safe_dump(env, sort_keys=False)
        spec["shutdownAfterJobFinishes"] = self.shutdown_after_finish
        if self.ttl_after_finished_s:
            spec["ttlSecondsAfterFinished"] = self.ttl_after_finished_s
        spec["backoffLimit"] = self.backoff_limit
        if self.active_deadline_s is not None:
            spec["activeDeadlineSeconds"] = self.active_deadline_s
        if self.submission_mode != "K8sJobMode":
            spec["submissionMode"] = self.submission_mode
        if self.cluster is not None:
            spec["rayClusterSpec"] = self.cluster.cluster_spec(results=self.results)
        else:
            spec["clusterSelector"] = {"ray.io/cluster": self.existing_cluster}
        annotations = {_RUNTIME_ANNOTATION: self.runtime, **self.annotations}
        return _finish("RayJob", self.name, self.namespace, self.labels, annotations, spec)

    def _extras_used(self) -> tuple[str, ...]:
        root = self.results.storage_root if self.results else self.env_vars.get("RAYMLP_STORAGE_ROOT")
        return _ship.extras_for(root, self.extras)


_RUNTIME_ANNOTATION = "raymlp.io/runtime"  # how the workload gets raymlp: ship | image


def _extras(field: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise fail(field, value, "a sequence of raymlp extra names, e.g. ('torch', 's3')")
    known = _ship.known_extras()
    for extra in value:
        choice(field, extra, known)
    return tuple(value)


def _check_results(owner: str, results: ResultStore | None, env_vars: Mapping[str, Any],
                   runtime_env: Mapping[str, Any], *, ephemeral: bool, allowed: bool) -> None:
    """Refuse a run tracked into a file on a cluster that is deleted when the job ends."""
    if not ephemeral or allowed:
        return
    from raymlp.cluster._submit import is_local_uri

    if results is not None:
        tracking = results.tracking_uri
    else:
        given = {**dict(runtime_env.get("env_vars") or {}), **dict(env_vars)}
        tracking = given.get("RAYMLP_TRACKING_URI") or given.get("MLFLOW_TRACKING_URI")
    if is_local_uri(tracking):
        raise SpecError(
            f"{owner}.results: the job would track into a local file on the head "
            f"(tracking_uri={tracking or 'unset: sqlite under the working directory'!r}) while "
            f"{owner}.shutdown_after_finish=True (shutdownAfterJobFinishes) deletes the cluster, "
            "its run, checkpoints and model with it when the job ends; give "
            "results=ResultStore() (the cluster/mlflow services) or your own tracking server and "
            "storage root, or allow_local_results=True to keep it anyway",
            field=f"{owner}.results", value=tracking,
            allowed="a tracking server URI (http://...) when shutdown_after_finish=True")


def _code(runtime: str, working_dir: str | None, results: ResultStore | None,
          owner: str) -> tuple[dict[str, Any], list[tuple[str, str, str | None]]]:
    """The runtime-env entries that point at packaged code, and what to upload for them.

    A local ``working_dir`` and (``runtime="ship"``) raymlp's own package travel as zips under
    ``<storage root>/code/``, named by their content hash, so the manifest never carries a path
    of the machine that rendered it.
    """
    local_dir = working_dir is not None and "://" not in working_dir
    if not local_dir and runtime != "ship":
        return {}, []
    if results is None or results.local:
        what = f"{owner}.working_dir {working_dir!r}" if local_dir else f"{owner}.runtime='ship'"
        raise SpecError(
            f"{what} needs a remote storage root to carry the code (raymlp cluster apply uploads "
            f"it there): give {owner}.results=ResultStore(...) with an s3:// (or gs://) "
            "storage_root, or use an image with the code in it (runtime='image') and a remote "
            "working_dir URI", field=f"{owner}.results", value=results,
            allowed="a ResultStore with a remote storage_root")
    root = f"{results.storage_root.rstrip('/')}/code"
    env: dict[str, Any] = {}
    uploads: list[tuple[str, str, str | None]] = []
    if local_dir:
        uri = _ship.package_uri(working_dir, root, "workdir")
        env["working_dir"] = uri
        uploads.append((working_dir, uri, None))
    if runtime == "ship":
        uri = _ship.package_uri(_ship.package_dir(), root, "raymlp", wrap="raymlp")
        env["py_modules"] = [uri]
        uploads.append((_ship.package_dir(), uri, "raymlp"))
    return env, uploads


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServeApplication:
    """One Ray Serve application of a :class:`RayServiceSpec`.

    Args:
        name: the application name.
        import_path: ``module:attribute`` of the application (a bound deployment or builder).
        route_prefix: the HTTP route prefix.
        args: arguments passed to an application builder.
        runtime_env: the application's Ray runtime environment.
        deployments: per-deployment overrides (Serve config ``deployments`` entries), e.g.
            ``{"name": "Model", "autoscaling_config": {"min_replicas": 2, "max_replicas": 10}}``.
    """

    name: str
    import_path: str
    route_prefix: str = "/"
    args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    runtime_env: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    deployments: Sequence[Mapping[str, Any]] = ()

    def __post_init__(self) -> None:
        string("ServeApplication.name", self.name)
        string("ServeApplication.import_path", self.import_path, pattern=_IMPORT_PATH, allowed="'module:attribute'")
        string("ServeApplication.route_prefix", self.route_prefix, pattern=r"/.*", allowed="a path starting with '/'")
        for field in ("args", "runtime_env"):
            mapping(f"ServeApplication.{field}", getattr(self, field))
        deployments = tuple(self.deployments)
        for i, dep in enumerate(deployments):
            if not isinstance(dep, Mapping) or not isinstance(dep.get("name"), str):
                raise fail(f"ServeApplication.deployments[{i}]", dep, "a mapping with a 'name'")
        object.__setattr__(self, "deployments", deployments)

    def config(self) -> dict[str, Any]:
        """This application's entry in a Serve config file."""
        out: dict[str, Any] = {"name": self.name, "import_path": self.import_path, "route_prefix": self.route_prefix}
        if self.args:
            out["args"] = dict(self.args)
        if self.runtime_env:
            out["runtime_env"] = dict(self.runtime_env)
        if self.deployments:
            out["deployments"] = [dict(d) for d in self.deployments]
        return out


UPGRADE_STRATEGIES = ("NewCluster", "None", "NewClusterWithIncrementalUpgrade")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RayServiceSpec:
    """Ray Serve applications on a KubeRay-managed cluster, upgraded without downtime.

    Args:
        name: the RayService name (at most 47 characters).
        cluster: the cluster the applications run on.
        applications: the Serve applications (unique names and route prefixes).
        upgrade_strategy: ``"NewCluster"`` (zero-downtime blue/green on cluster changes),
            ``"NewClusterWithIncrementalUpgrade"`` (needs the operator's feature gate) or ``"None"``.
        namespace: the Kubernetes namespace.
        results: where the applications track and find models (default: the cluster's),
            rendered into every pod's environment.
        runtime: how the applications get raymlp: ``"ship"`` (its package, uploaded under
            ``results.storage_root`` by ``raymlp cluster apply``, and its requirements, in each
            application's runtime env) or ``"image"``. Default: ``"ship"`` when ``results``
            is given and the cluster names no ``image``, else ``"image"``.
        extras: raymlp extras the applications use.
        labels: metadata labels.
        annotations: metadata annotations.

    Raises:
        SpecError: naming the field, the value and what is allowed.
    """

    name: str
    cluster: RayClusterSpec
    applications: Sequence[ServeApplication]
    upgrade_strategy: str = "NewCluster"
    namespace: str | None = None
    results: ResultStore | None = None
    runtime: str | None = None
    extras: Sequence[str] = ()
    labels: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    annotations: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _k8s_name("RayServiceSpec.name", self.name, MAX_NAME_LENGTH["RayService"])
        _k8s_name("RayServiceSpec.namespace", self.namespace, 63, optional=True)
        instance("RayServiceSpec.cluster", self.cluster, RayClusterSpec, what="a RayClusterSpec")
        apps = _sequence_of("RayServiceSpec.applications", self.applications, ServeApplication, non_empty=True)
        for attr in ("name", "route_prefix"):
            values = [getattr(a, attr) for a in apps]
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise fail(f"RayServiceSpec.applications[].{attr}", dupes, f"unique {attr}s")
        object.__setattr__(self, "applications", apps)
        choice("RayServiceSpec.upgrade_strategy", self.upgrade_strategy, UPGRADE_STRATEGIES)
        instance("RayServiceSpec.results", self.results, ResultStore, what="a ResultStore", optional=True)
        if self.results is None and self.cluster.results is not None:
            object.__setattr__(self, "results", self.cluster.results)
        runtime = self.runtime or ("ship" if self.results is not None and not self.cluster.image else "image")
        object.__setattr__(self, "runtime", choice("RayServiceSpec.runtime", runtime, _ship.RUNTIMES))
        object.__setattr__(self, "extras", _extras("RayServiceSpec.extras", self.extras))
        object.__setattr__(self, "labels", _str_map("RayServiceSpec.labels", self.labels))
        object.__setattr__(self, "annotations", _str_map("RayServiceSpec.annotations", self.annotations))

    def _applications(self) -> tuple[list[dict[str, Any]], list[tuple[str, str, str | None]]]:
        configs, uploads = [], []
        root = self.results.storage_root if self.results else None
        for i, app in enumerate(self.applications):
            config = app.config()
            env = dict(config.get("runtime_env") or {})
            code, more = _code(self.runtime, env.get("working_dir"), self.results,
                               f"RayServiceSpec.applications[{i}]")
            env.update(code)
            env = _ship.runtime_env(env, runtime=self.runtime, extras=_ship.extras_for(root, self.extras),
                                    field="RayServiceSpec.runtime", package=None)
            if env:
                config["runtime_env"] = env
            configs.append(config)
            uploads += [u for u in more if u not in uploads]
        return configs, uploads

    def uploads(self) -> list[tuple[str, str, str | None]]:
        """(local folder, URI, folder name inside) of the code the manifest refers to by URI;
        ``raymlp cluster apply`` uploads them first."""
        return self._applications()[1]

    def serve_config(self) -> dict[str, Any]:
        """The Serve config (``serveConfigV2``) as data."""
        return {"applications": self._applications()[0]}

    def render(self) -> dict[str, Any]:
        """The ``ray.io/v1`` RayService manifest, validated."""
        spec = {
            "upgradeStrategy": {"type": self.upgrade_strategy},
            "serveConfigV2": yaml.safe_dump(self.serve_config(), sort_keys=False),
            "rayClusterConfig": self.cluster.cluster_spec(extra_head_ports=[("serve", 8000)],
                                                          results=self.results),
        }
        annotations = {_RUNTIME_ANNOTATION: self.runtime, **self.annotations}
        return _finish("RayService", self.name, self.namespace, self.labels, annotations, spec)


def _finish(kind: str, name: str, namespace: str | None, labels: Mapping[str, str],
            annotations: Mapping[str, str], spec: dict[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    labels = {"app.kubernetes.io/managed-by": "raymlp", **labels}
    metadata["labels"] = labels
    if annotations:
        metadata["annotations"] = dict(annotations)
    manifest = {"apiVersion": "ray.io/v1", "kind": kind, "metadata": metadata, "spec": spec}
    issues = validate_manifest(manifest)
    if issues:
        raise SpecError(
            f"the rendered {kind} {name!r} is not valid: " + "; ".join(str(i) for i in issues),
            field=issues[0].path,
            value=manifest,
        )
    return manifest


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    # Embedded YAML (runtimeEnvYAML, serveConfigV2) reads best as a literal block.
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def to_yaml(*manifests: Mapping[str, Any]) -> str:
    """Manifests as one multi-document YAML string, keys in rendering order."""
    return yaml.dump_all([dict(m) for m in manifests], Dumper=_Dumper, sort_keys=False, width=10_000)
