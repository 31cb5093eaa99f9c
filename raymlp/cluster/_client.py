"""Apply, watch and delete KubeRay resources through the official ``kubernetes`` client.

Every manifest is validated (:func:`validate_manifest`) before it is sent. ``apply`` uses
Kubernetes server-side apply with the field manager ``"raymlp"``: the API server merges the
manifest into the stored object and *removes* every field raymlp set before and no longer sets
(a merge patch never removes a field that is left out). It returns a :class:`ClusterResource`
handle; its ``wait`` polls the object's status until the kind's ready or terminal state:

============  ============================================================================
RayCluster    conditions ``HeadPodReady`` and ``RayClusterProvisioned`` both True
              (or ``status.state == "ready"`` on operators that set no conditions)
RayJob        ``status.jobDeploymentStatus`` terminal (Complete / Failed), then ``jobStatus``
RayService    condition ``Ready`` True
============  ============================================================================
"""

from __future__ import annotations

import dataclasses
import html
import json
from collections.abc import Callable, Mapping
from typing import Any

from raymlp._spec import choice
from raymlp._util import poll
from raymlp.cluster._crds import KINDS
from raymlp.cluster._validate import validate_manifest
from raymlp.errors import ConfigError, JobError, KubernetesError, SpecError

__all__ = ["FIELD_MANAGER", "ClusterResource", "KubeRayClient", "ResourceStatus"]

GROUP, VERSION = "ray.io", "v1"
JOB_TERMINAL_DEPLOYMENT = ("Complete", "Failed", "ValidationFailed")
#: The field manager of raymlp's server-side applies: the API server tracks which fields it owns.
FIELD_MANAGER = "raymlp"
_APPLY_PATCH = "application/apply-patch+yaml"


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


_GOAL = {"RayCluster": "ready", "RayJob": "finished", "RayService": "ready"}


def _plural(kind: str) -> str:
    return KINDS[choice("kind", kind, sorted(KINDS))]


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
        >>> job = client.apply(job_spec)                           # doctest: +SKIP
        >>> job.wait(timeout_s=3600).job_status                      # doctest: +SKIP
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

    def apply(self, resource: Any, *, dry_run: bool | str = False, force: bool = False) -> ClusterResource:
        """Create or update the resource with server-side apply (field manager ``"raymlp"``).

        Fields raymlp set on an earlier apply and left out now are removed on the cluster;
        fields other managers own (the operator's ``status``, a ``kubectl edit``) stay.

        Args:
            resource: a RayClusterSpec/RayJobSpec/RayServiceSpec, or a manifest mapping.
            dry_run: ``"All"`` (or True) has the API server validate, default and return the
                result without persisting anything.
            force: take over fields another field manager owns instead of failing with a
                conflict (``kubectl apply --server-side --force-conflicts``).

        Returns:
            A :class:`ClusterResource` handle (``action`` is ``"created"`` or ``"configured"``).

        Raises:
            SpecError: the manifest is invalid, or ``dry_run`` is not False/True/"All"
                (nothing is sent).
            KubernetesError: the API server refused it (409: a field another manager owns
                differs; pass ``force=True`` to take it over).
        """
        dry = "All" if dry_run is True else (None if dry_run in (False, None) else dry_run)
        choice("dry_run", dry, ("All",), optional=True)
        manifest = resource.render() if hasattr(resource, "render") else dict(resource)
        issues = validate_manifest(manifest)
        if issues:
            raise SpecError(
                "not applied, the manifest is invalid: " + "; ".join(map(str, issues)),
                field=issues[0].path, value=manifest,
            )
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        namespace = manifest["metadata"].get("namespace") or self.namespace
        body = {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}}
        kwargs: dict[str, Any] = {"field_manager": FIELD_MANAGER, "force": force,
                                  "_content_type": _APPLY_PATCH}
        if dry:
            kwargs["dry_run"] = dry
        # The raw response: the generated client decodes only a 200 body, and an apply that
        # creates the object answers 201 Created.
        raw = self._call(
            f"apply {kind} {namespace}/{name}",
            self._custom.patch_namespaced_custom_object,
            GROUP, VERSION, namespace, _plural(kind), name, body, _preload_content=False, **kwargs,
        )
        obj = json.loads(raw.data)
        return ClusterResource(kind=kind, name=name, namespace=namespace,
                               action="created" if raw.status == 201 else "configured",
                               dry_run=bool(dry), object=obj, client=self)

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

    def wait(self, kind: str, name: str, *, namespace: str | None = None, timeout_s: float | None = 600.0,
             poll_s: float = 2.0, on_change: Callable[[ResourceStatus], None] | None = None) -> ResourceStatus:
        """Poll until the resource is ready (RayCluster, RayService) or terminal (RayJob).

        Args:
            timeout_s: seconds to wait (None: for ever).
            poll_s: seconds between status reads.
            on_change: called with each new status (a different state or job status).

        Returns:
            The final status.

        Raises:
            JobError: a RayJob ended failed (with the operator's reason and message).
            KubernetesError: a RayCluster failed.
            raymlp.errors.TimeoutError: the state was not reached within ``timeout_s``; its
                ``last_status`` is the last :class:`ResourceStatus` read.
        """
        seen: dict[str, Any] = {}

        def check() -> ResourceStatus | None:
            st = self.status(kind, name, namespace=namespace)
            key = (st.state, st.job_status, tuple(sorted(st.conditions.items())))
            if key != seen.get("key") and on_change:
                on_change(st)
            seen.update(key=key, status=st)
            if st.failed:
                why = ": ".join(x for x in (st.reason, st.message) if x) or "no reason given"
                if kind == "RayJob":
                    raise JobError(f"{kind} {name} failed (state {st.state}, job status {st.job_status}): {why}",
                                   cause=st.reason)
                raise KubernetesError(f"{kind} {name} failed (state {st.state}): {why}")
            return st if st.ready else None

        return poll(check, timeout_s=timeout_s, what=f"{kind} {name} to be {_GOAL[kind]}",
                    interval_s=poll_s, max_interval_s=poll_s, status=lambda: seen.get("status"))

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


@dataclasses.dataclass(frozen=True)
class ClusterResource:
    """A Ray resource applied to Kubernetes: what :meth:`KubeRayClient.apply` returns.

    Attributes:
        kind: RayCluster, RayJob or RayService.
        name: the object's name.
        namespace: its namespace.
        action: ``"created"`` or ``"configured"`` (it existed).
        dry_run: True when the apply was a server-side dry run (nothing was stored).
        object: the object as the API server returned it.

    Example:
        >>> job = client.apply(job_spec)                  # doctest: +SKIP
        >>> job.wait(timeout_s=3600).job_status           # doctest: +SKIP
        'SUCCEEDED'
    """

    kind: str
    name: str
    namespace: str
    action: str
    dry_run: bool
    object: Mapping[str, Any] = dataclasses.field(repr=False, compare=False)
    client: KubeRayClient = dataclasses.field(repr=False, compare=False)

    def status(self) -> ResourceStatus:
        """A summary of the object's status now."""
        return self.client.status(self.kind, self.name, namespace=self.namespace)

    def wait(self, *, timeout_s: float | None = 600.0, poll_s: float = 2.0,
             on_change: Callable[[ResourceStatus], None] | None = None) -> ResourceStatus:
        """Wait until it is ready (RayCluster, RayService) or finished (RayJob); see
        :meth:`KubeRayClient.wait` (a wait that runs out raises
        :class:`raymlp.errors.TimeoutError`)."""
        return self.client.wait(self.kind, self.name, namespace=self.namespace, timeout_s=timeout_s,
                                poll_s=poll_s, on_change=on_change)

    def delete(self) -> bool:
        """Delete it; returns False when it did not exist."""
        return self.client.delete(self.kind, self.name, namespace=self.namespace)

    def logs(self, *, tail_lines: int | None = None) -> str:
        """The logs of a RayJob's submitter pod.

        Raises:
            SpecError: the resource is not a RayJob.
        """
        choice("kind", self.kind, ("RayJob",))
        return self.client.logs(self.name, namespace=self.namespace, tail_lines=tail_lines)

    def __str__(self) -> str:
        return f"{self.kind.lower()}.ray.io/{self.name} {self.action}{' (server dry run)' if self.dry_run else ''}"

    def _repr_html_(self) -> str:
        return (f"<b>{html.escape(self.kind)}</b> {html.escape(self.namespace)}/{html.escape(self.name)}: "
                f"{html.escape(self.action)}{' (server dry run)' if self.dry_run else ''}")
