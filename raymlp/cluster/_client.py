"""Apply, watch and delete KubeRay resources through the official ``kubernetes`` client.

Every manifest is validated (:func:`validate_manifest`) before it is sent. ``apply`` creates
the object, or merge-patches it when it exists (a second apply of a changed spec updates it);
``wait`` polls the object's status until the kind's ready or terminal state:

============  ============================================================================
RayCluster    conditions ``HeadPodReady`` and ``RayClusterProvisioned`` both True
              (or ``status.state == "ready"`` on operators that set no conditions)
RayJob        ``status.jobDeploymentStatus`` terminal (Complete / Failed), then ``jobStatus``
RayService    condition ``Ready`` True
============  ============================================================================
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping

from raymlp.cluster._crds import KINDS
from raymlp.cluster._validate import validate_manifest
from raymlp.errors import ConfigError, JobError, RaymlpError, SpecError

__all__ = ["KubeRayClient", "ResourceStatus", "KubernetesError"]

GROUP, VERSION = "ray.io", "v1"
JOB_TERMINAL_DEPLOYMENT = ("Complete", "Failed", "ValidationFailed")


class KubernetesError(RaymlpError):
    """The Kubernetes API refused a request; ``status`` holds its HTTP status."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class ResourceStatus:
    """A summary of a Ray resource's status.

    Attributes:
        kind: RayCluster, RayJob or RayService.
        name: the object's name.
        state: the main state (RayCluster ``state``, RayJob ``jobDeploymentStatus``,
            RayService ``serviceStatus`` or its Ready condition).
        job_status: a RayJob's ``jobStatus`` (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED).
        ready: whether the kind's ready/terminal condition holds.
        failed: whether it ended in failure.
        reason: the operator's reason, when it gives one.
        message: the operator's message, when it gives one.
        conditions: ``type -> status`` of the status conditions.
        raw: the whole ``status`` object.
    """

    kind: str
    name: str
    state: str | None
    job_status: str | None
    ready: bool
    failed: bool
    reason: str | None
    message: str | None
    conditions: Mapping[str, str]
    raw: Mapping[str, Any]


def _summarize(kind: str, obj: Mapping[str, Any]) -> ResourceStatus:
    status = obj.get("status") or {}
    conds = {c.get("type"): c for c in status.get("conditions") or []}
    cond_status = {t: str(c.get("status")) for t, c in conds.items()}
    name = (obj.get("metadata") or {}).get("name", "")
    reason = status.get("reason")
    message = status.get("message")
    job_status = None
    if kind == "RayCluster":
        state = status.get("state")
        ready = (cond_status.get("HeadPodReady") == "True" and cond_status.get("RayClusterProvisioned") == "True") or (
            not conds and state == "ready"
        )
        failed = state == "failed"
    elif kind == "RayJob":
        state = status.get("jobDeploymentStatus")
        job_status = status.get("jobStatus")
        ready = state in JOB_TERMINAL_DEPLOYMENT
        failed = state in ("Failed", "ValidationFailed") or job_status in ("FAILED", "STOPPED")
    else:
        ready_cond = conds.get("Ready") or {}
        state = status.get("serviceStatus") or (
            "Ready" if ready_cond.get("status") == "True" else ready_cond.get("reason")
        )
        ready = ready_cond.get("status") == "True" or status.get("serviceStatus") == "Running"
        failed = False
        reason = reason or ready_cond.get("reason")
        message = message or ready_cond.get("message")
    return ResourceStatus(
        kind=kind, name=name, state=state, job_status=job_status, ready=ready, failed=failed,
        reason=reason, message=message, conditions=cond_status, raw=status,
    )


def _plural(kind: str) -> str:
    if kind not in KINDS:
        raise SpecError(f"kind must be one of {sorted(KINDS)}, got {kind!r}", field="kind", value=kind)
    return KINDS[kind]


class KubeRayClient:
    """Apply, inspect, wait for and delete KubeRay resources.

    Args:
        namespace: the default namespace (``"default"`` when None and the kubeconfig sets none).
        kubeconfig: a kubeconfig file (None: ``$KUBECONFIG`` or ``~/.kube/config``).
        context: a kubeconfig context.
        in_cluster: use the pod's service account; None tries in-cluster config first when
            running in a pod, then the kubeconfig.
        api_client: a ready ``kubernetes.client.ApiClient`` (tests, custom auth); when given,
            ``kubeconfig``/``context``/``in_cluster`` are not used.

    Example:
        >>> client = KubeRayClient(namespace="team-a")            # doctest: +SKIP
        >>> client.apply(job_spec)                                 # doctest: +SKIP
        ('created', {...})
        >>> client.wait("RayJob", "digits", timeout=3600).job_status  # doctest: +SKIP
        'SUCCEEDED'
    """

    def __init__(self, *, namespace: str | None = None, kubeconfig: str | None = None,
                 context: str | None = None, in_cluster: bool | None = None, api_client: Any = None):
        from kubernetes import client, config

        if api_client is None:
            default_ns = None
            try:
                if in_cluster or (in_cluster is None and kubeconfig is None and context is None and _in_pod()):
                    config.load_incluster_config()
                    default_ns = _pod_namespace()
                else:
                    config.load_kube_config(config_file=kubeconfig, context=context)
                    _, active = config.list_kube_config_contexts(config_file=kubeconfig)
                    if context:
                        active = next(
                            (c for c in config.list_kube_config_contexts(config_file=kubeconfig)[0]
                             if c["name"] == context), active,
                        )
                    default_ns = (active or {}).get("context", {}).get("namespace")
            except config.ConfigException as exc:
                raise ConfigError(
                    f"no usable Kubernetes configuration ({exc}); pass kubeconfig=, set KUBECONFIG, "
                    "or run inside a pod with a service account"
                ) from exc
            api_client = client.ApiClient()
            namespace = namespace or default_ns
        self.namespace = namespace or "default"
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)

    # -- helpers ------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise _api_error(what, exc) from exc
        except OSError as exc:  # urllib3 connection errors derive from OSError
            raise KubernetesError(f"{what} failed: cannot reach the Kubernetes API ({exc})") from exc

    # -- public API ---------------------------------------------------------------------------

    def apply(self, resource: Any) -> tuple[str, dict[str, Any]]:
        """Create the resource, or merge-patch it if it exists.

        Args:
            resource: a RayClusterSpec/RayJobSpec/RayServiceSpec, or a manifest mapping.

        Returns:
            ``("created" | "configured", the object as the API server returned it)``.

        Raises:
            SpecError: the manifest is invalid (nothing is sent).
            KubernetesError: the API server refused it.
        """
        from kubernetes.client.exceptions import ApiException

        manifest = resource.render() if hasattr(resource, "render") else dict(resource)
        issues = validate_manifest(manifest)
        if issues:
            raise SpecError(
                "not applied, the manifest is invalid: " + "; ".join(map(str, issues)),
                field=issues[0].path, value=manifest,
            )
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        namespace = manifest["metadata"].get("namespace") or self.namespace
        plural = _plural(kind)
        try:
            obj = self._custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, manifest)
            return "created", obj
        except ApiException as exc:
            if exc.status != 409:  # 409 Conflict: it exists, so patch it below
                raise _api_error(f"create {kind} {namespace}/{name}", exc) from exc
        obj = self._call(
            f"patch {kind} {namespace}/{name}",
            self._custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, plural, name, manifest,
        )
        return "configured", obj

    def get(self, kind: str, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        """The whole object."""
        ns = namespace or self.namespace
        return self._call(
            f"get {kind} {ns}/{name}",
            self._custom.get_namespaced_custom_object, GROUP, VERSION, ns, _plural(kind), name,
        )

    def status(self, kind: str, name: str, *, namespace: str | None = None) -> ResourceStatus:
        """A summary of the object's status."""
        return _summarize(kind, self.get(kind, name, namespace=namespace))

    def wait(self, kind: str, name: str, *, namespace: str | None = None, timeout: float = 600.0,
             poll_s: float = 2.0, on_change: Callable[[ResourceStatus], None] | None = None) -> ResourceStatus:
        """Poll until the resource is ready (RayCluster, RayService) or terminal (RayJob).

        Args:
            on_change: called with each new status (a different state or job status).

        Returns:
            The final status.

        Raises:
            JobError: a RayJob ended failed (with the operator's reason and message), or a
                RayCluster failed.
            TimeoutError: the state was not reached within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        last: tuple[Any, ...] | None = None
        while True:
            st = self.status(kind, name, namespace=namespace)
            key = (st.state, st.job_status, tuple(sorted(st.conditions.items())))
            if key != last and on_change:
                on_change(st)
            last = key
            if st.ready or st.failed:
                if st.failed:
                    why = ": ".join(x for x in (st.reason, st.message) if x) or "no reason given"
                    detail = f"{kind} {name} failed (state {st.state}, job status {st.job_status}): {why}"
                    raise JobError(detail, cause=st.reason)
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{kind} {name} not ready after {timeout:g} s (state {st.state!r}, "
                    f"job status {st.job_status!r}, conditions {dict(st.conditions)})"
                )
            time.sleep(poll_s)

    def logs(self, name: str, *, namespace: str | None = None, tail_lines: int | None = None) -> str:
        """The logs of a RayJob's submitter pod (K8sJobMode: the Kubernetes Job of the same name)."""
        ns = namespace or self.namespace
        pods = self._call(
            f"list pods of RayJob {ns}/{name}",
            self._core.list_namespaced_pod, ns, label_selector=f"job-name={name}",
        )
        if not pods.items:
            raise KubernetesError(f"RayJob {ns}/{name} has no submitter pod (yet)", status=404)
        newest = max(pods.items, key=lambda p: p.metadata.creation_timestamp or 0)
        kwargs = {"tail_lines": tail_lines} if tail_lines else {}
        return self._call(
            f"read logs of {newest.metadata.name}",
            self._core.read_namespaced_pod_log, newest.metadata.name, ns, **kwargs,
        )

    def delete(self, kind: str, name: str, *, namespace: str | None = None) -> bool:
        """Delete the object; returns False when it did not exist."""
        ns = namespace or self.namespace
        try:
            self._call(
                f"delete {kind} {ns}/{name}",
                self._custom.delete_namespaced_custom_object, GROUP, VERSION, ns, _plural(kind), name,
            )
        except KubernetesError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def _api_error(what: str, exc: Any) -> KubernetesError:
    import json

    detail = exc.reason
    try:
        detail = json.loads(exc.body).get("message", detail)
    except (TypeError, ValueError, AttributeError):
        pass
    return KubernetesError(f"{what} failed: HTTP {exc.status} {detail}", status=exc.status)


def _in_pod() -> bool:
    import os

    return os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token")


def _pod_namespace() -> str | None:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as fh:
            return fh.read().strip() or None
    except OSError:
        return None
