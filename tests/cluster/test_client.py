"""KubeRayClient against a local stand-in of the Kubernetes API server.

A mock, allowed here only because no Kubernetes cluster can run on this machine: these tests
drive the official ``kubernetes`` client against a small threaded HTTP server that implements
the API surface the client uses: ``ray.io/v1`` custom objects (server-side apply PATCH, GET,
DELETE) for rayclusters, rayjobs and rayservices, and core/v1 pod list + pod log. Its
server-side apply keeps the API server's semantics that matter here: ``managedFields`` record
which manager owns which fields; a field the manager set before and omits now is removed; a
field another manager owns is a 409 conflict unless ``force=true``; ``dryRun=All`` persists
nothing. Lists are atomic (owned as a whole). The test itself plays the KubeRay operator by
setting ``status`` on the stored objects. What this proves: the client sends valid manifests
as server-side applies with raymlp's field manager, decodes API errors, follows status
transitions to the terminal state and reports a failed RayJob's reason. What it does not prove:
behaviour of a real API server (admission, RBAC, defaulting, list merge keys) or operator.
"""

from __future__ import annotations

import builtins
import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from kubernetes import client as k8s

import raymlp.errors
from raymlp.cluster import (
    ClusterResource,
    KubeRayClient,
    KubernetesError,
    RayClusterSpec,
    RayJobSpec,
    WorkerGroup,
)
from raymlp.errors import JobError, SpecError
from tests.cluster.conftest import REPO_ROOT

_UNTRACKED = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace"),
              ("metadata", "managedFields"), ("metadata", "resourceVersion"), ("metadata", "generation")}


def _leaves(obj, prefix=()):
    """The field paths an applied configuration sets (lists are atomic, as leaves)."""
    if prefix in _UNTRACKED or prefix[:1] == ("status",):
        return set()
    if isinstance(obj, dict) and obj:
        return set().union(*(_leaves(v, (*prefix, k)) for k, v in obj.items()))
    return {prefix} if prefix else set()


def _get(obj, path):
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _remove(obj, path):
    node = obj
    for part in path[:-1]:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):  # drop the maps the removal emptied
        parent = _get(obj, path[:depth - 1]) if depth > 1 else obj
        if isinstance(parent, dict) and parent.get(path[depth - 1]) == {}:
            del parent[path[depth - 1]]


def _merge(target, config):
    if not isinstance(config, dict) or not isinstance(target, dict):
        return copy.deepcopy(config)
    out = dict(target)
    for k, v in config.items():
        out[k] = _merge(out.get(k), v)
    return out


def _fields_v1(paths):
    out = {}
    for path in sorted(paths):
        node = out
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return out


def _paths(fields, prefix=()):
    if not fields:
        return {prefix} if prefix else set()
    return set().union(*(_paths(v, (*prefix, k[2:])) for k, v in fields.items()))


class FakeApiServer:
    """The stand-in API server; ``objects[(plural, ns, name)]`` is its store."""

    def __init__(self):
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.requests: list[tuple[str, str, str, dict]] = []  # (method, path, content-type, query)
        self.status_script: dict[tuple[str, str, str], list[dict]] = {}
        self.pods: dict[str, list[dict]] = {}
        self.logs: dict[str, str] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, code, body, ctype="application/json"):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code, reason, message):
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "reason": reason, "message": message, "code": code})

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return yaml.safe_load(self.rfile.read(n) or b"null")  # JSON is YAML too

            def _route(self, method):
                url = urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                with server.lock:
                    server.requests.append((method, url.path, self.headers.get("Content-Type", ""), query))
                    if parts[:3] == ["apis", "ray.io", "v1"] and parts[3] == "namespaces":
                        return self._custom(method, parts[4], parts[5], parts[6] if len(parts) > 6 else None, query)
                    if parts[:2] == ["api", "v1"] and parts[4] == "pods":
                        if len(parts) == 5:
                            job = query.get("labelSelector", "").partition("job-name=")[2]
                            return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                                    "items": server.pods.get(job, [])})
                        if len(parts) == 7 and parts[6] == "log":
                            if parts[5] not in server.logs:
                                return self._status(404, "NotFound", f'pods "{parts[5]}" not found')
                            return self._send(200, server.logs[parts[5]], "text/plain")
                    return self._status(404, "NotFound", f"no route {url.path}")

            def _custom(self, method, ns, plural, name, query):
                if plural not in ("rayclusters", "rayjobs", "rayservices") or name is None:
                    return self._status(404, "NotFound", f"the server could not find {plural}")
                key = (plural, ns, name)
                if method == "PATCH":
                    return self._apply(key, query)
                if key not in server.objects:
                    return self._status(404, "NotFound", f'{plural}.ray.io "{name}" not found')
                obj = server.objects[key]
                if method == "GET":
                    script = server.status_script.get(key)
                    if script:  # the "operator" moves the object one step per read
                        obj["status"] = script.pop(0)
                    return self._send(200, obj)
                if method == "DELETE":
                    del server.objects[key]
                    return self._send(200, {"kind": "Status", "status": "Success"})
                return self._status(405, "MethodNotAllowed", method)

            def _apply(self, key, query):
                ctype = self.headers.get("Content-Type", "")
                if ctype != "application/apply-patch+yaml":
                    return self._status(415, "UnsupportedMediaType", f"only server-side apply here, got {ctype}")
                manager = query.get("fieldManager")
                if not manager:
                    return self._status(400, "BadRequest", "fieldManager is required for apply patch")
                config = self._body()
                if config["metadata"]["name"] != key[2]:
                    return self._status(400, "BadRequest", "the name of the object does not match the URL")
                old = server.objects.get(key)
                owners = {m["manager"]: _paths(m["fieldsV1"]) for m in
                          (old or {}).get("metadata", {}).get("managedFields", [])}
                mine_before = owners.pop(manager, set())
                mine = _leaves(config)
                conflicts = sorted(".".join(p) for other in owners.values() for p in other & mine
                                   if _get(old, p) != _get(config, p))
                if conflicts and query.get("force") != "true":
                    return self._status(409, "Conflict", f"Apply failed with {len(conflicts)} conflict(s): "
                                        f"conflicts with another manager using {', '.join(conflicts)}")
                for other in owners.values():
                    other -= mine  # forced, or the same value: the field is shared or taken over
                new = copy.deepcopy(old) if old else {}
                for path in mine_before - mine:
                    if not any(path in other for other in owners.values()):
                        _remove(new, path)
                new = _merge(new, config)
                meta = new["metadata"]
                meta.update(namespace=key[1], resourceVersion=str(int((old or {}).get("metadata", {})
                                                                   .get("resourceVersion", "0")) + 1))
                generation = (old or {}).get("metadata", {}).get("generation", 0)
                meta["generation"] = generation + (old is None or new.get("spec") != old.get("spec"))
                owners[manager] = mine
                meta["managedFields"] = [{"manager": m, "operation": "Apply", "fieldsType": "FieldsV1",
                                          "fieldsV1": _fields_v1(p)} for m, p in owners.items() if p]
                if query.get("dryRun") != "All":
                    server.objects[key] = new
                return self._send(201 if old is None else 200, new)

            def do_GET(self):
                self._route("GET")

            def do_PATCH(self):
                self._route("PATCH")

            def do_DELETE(self):
                self._route("DELETE")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def api():
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def kuberay(api):
    config = k8s.Configuration()
    config.host = api.url
    return KubeRayClient(namespace="team-a", api_client=k8s.ApiClient(config))


def _job(**overrides):
    fields = {
        "name": "train",
        "entrypoint": "python train.py",
        "cluster": RayClusterSpec(workers=[WorkerGroup(name="cpu", replicas=2)]),
        "runtime": "image",
        "allow_local_results": True,
    }
    fields.update(overrides)
    return RayJobSpec(**fields)


def test_apply_creates_then_updates_with_server_side_apply(api, kuberay):
    job = kuberay.apply(_job())
    assert isinstance(job, ClusterResource)
    assert (job.kind, job.name, job.namespace, job.action, job.dry_run) == ("RayJob", "train", "team-a", "created", False)
    assert str(job) == "rayjob.ray.io/train created"
    stored = api.objects[("rayjobs", "team-a", "train")]
    assert stored["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 2
    assert [m["manager"] for m in stored["metadata"]["managedFields"]] == ["raymlp"]

    again = kuberay.apply(_job(cluster=RayClusterSpec(workers=[WorkerGroup(name="cpu", replicas=3)])))
    assert again.action == "configured"
    stored = api.objects[("rayjobs", "team-a", "train")]
    assert stored["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 3
    assert stored["metadata"]["generation"] == 2
    assert [(m, p, c, q) for m, p, c, q in api.requests] == [
        ("PATCH", "/apis/ray.io/v1/namespaces/team-a/rayjobs/train", "application/apply-patch+yaml",
         {"fieldManager": "raymlp", "force": "false"}),
    ] * 2


def test_a_field_dropped_from_the_spec_disappears_on_reapply(api, kuberay):
    kuberay.apply(_job(active_deadline_s=3600, env_vars={"SEED": 1}, labels={"team": "a"}))
    key = ("rayjobs", "team-a", "train")
    api.objects[key]["status"] = {"jobDeploymentStatus": "Running"}  # the operator's, not raymlp's
    assert api.objects[key]["spec"]["activeDeadlineSeconds"] == 3600
    kuberay.apply(_job())
    stored = api.objects[key]
    assert "activeDeadlineSeconds" not in stored["spec"]
    assert "runtimeEnvYAML" not in stored["spec"]
    assert "team" not in stored["metadata"]["labels"]
    assert stored["spec"]["entrypoint"] == "python train.py"
    assert stored["status"] == {"jobDeploymentStatus": "Running"}


def test_dry_run_all_leaves_nothing_on_the_cluster(api, kuberay, cli):
    dry = kuberay.apply(_job(), dry_run="All")
    assert (dry.action, dry.dry_run) == ("created", True)
    assert dry.object["spec"]["entrypoint"] == "python train.py"  # what would be stored
    assert api.objects == {}
    assert api.requests[-1][3]["dryRun"] == "All"
    kuberay.apply(_job())
    before = copy.deepcopy(api.objects)
    changed = kuberay.apply(_job(backoff_limit=3), dry_run=True)
    assert changed.action == "configured" and changed.object["spec"]["backoffLimit"] == 3
    assert api.objects == before
    with pytest.raises(SpecError, match="dry_run must be None or one of \\['All'\\]"):
        kuberay.apply(_job(), dry_run="Everything")


def test_a_field_another_manager_owns_is_a_conflict_unless_forced(api, kuberay):
    kuberay.apply(_job())
    # Someone else (kubectl apply --server-side) takes backoffLimit over with another value.
    kubectl = KubeRayClient(namespace="team-a", api_client=kuberay._custom.api_client)
    kubectl_manifest = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "train"},
                        "spec": {"backoffLimit": 2}}
    kubectl._custom.patch_namespaced_custom_object(
        "ray.io", "v1", "team-a", "rayjobs", "train", kubectl_manifest, field_manager="kubectl", force=True,
        _content_type="application/apply-patch+yaml")
    with pytest.raises(KubernetesError) as info:
        kuberay.apply(_job(backoff_limit=1))
    assert info.value.status == 409 and "spec.backoffLimit" in str(info.value)
    assert kuberay.apply(_job(backoff_limit=1), force=True).action == "configured"
    assert api.objects[("rayjobs", "team-a", "train")]["spec"]["backoffLimit"] == 1


def test_an_invalid_manifest_is_never_sent(api, kuberay):
    manifest = _job().render()
    manifest["spec"]["ttlSecondsAfterFinished"] = 30
    manifest["spec"]["shutdownAfterJobFinishes"] = False
    with pytest.raises(SpecError, match=r"spec.ttlSecondsAfterFinished"):
        kuberay.apply(manifest)
    assert api.requests == []


def test_wait_follows_a_rayjob_to_success(api, kuberay):
    api.status_script[("rayjobs", "team-a", "train")] = [
        {"jobDeploymentStatus": "Initializing"},
        {"jobDeploymentStatus": "Running", "jobStatus": "PENDING"},
        {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
        {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
    ]
    seen = []
    final = kuberay.apply(_job()).wait(timeout_s=10, poll_s=0.01,
                         on_change=lambda s: seen.append((s.state, s.job_status)))
    assert (final.state, final.job_status, final.failed) == ("Complete", "SUCCEEDED", False)
    assert seen == [("Initializing", None), ("Running", "PENDING"), ("Running", "RUNNING"),
                    ("Complete", "SUCCEEDED")]


def test_wait_reports_a_failed_rayjobs_reason(api, kuberay, cli):
    kuberay.apply(_job())
    api.status_script[("rayjobs", "team-a", "train")] = [
        {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
        {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed",
         "message": "Job entrypoint command failed with exit code 1"},
    ]
    with pytest.raises(JobError) as info:
        kuberay.wait("RayJob", "train", timeout_s=10, poll_s=0.01)
    assert info.value.cause == "AppFailed"
    assert "AppFailed: Job entrypoint command failed with exit code 1" in str(info.value)
    assert kuberay.status("RayJob", "train").failed


def test_wait_for_a_raycluster_needs_head_ready_and_provisioned(api, kuberay):
    kuberay.apply(RayClusterSpec(name="c1", workers=[WorkerGroup(name="cpu")]))
    api.status_script[("rayclusters", "team-a", "c1")] = [
        {"state": "", "conditions": [{"type": "HeadPodReady", "status": "False"}]},
        {"conditions": [{"type": "HeadPodReady", "status": "True"},
                        {"type": "RayClusterProvisioned", "status": "False"}]},
        {"state": "ready", "conditions": [{"type": "HeadPodReady", "status": "True"},
                                          {"type": "RayClusterProvisioned", "status": "True"}]},
    ]
    final = kuberay.wait("RayCluster", "c1", timeout_s=10, poll_s=0.01)
    assert final.ready and final.conditions == {"HeadPodReady": "True", "RayClusterProvisioned": "True"}
    assert api.status_script[("rayclusters", "team-a", "c1")] == []  # all three states were read


def test_the_handles_wait_raises_raymlps_timeout_error_with_the_last_status(api, kuberay):
    cluster = kuberay.apply(RayClusterSpec(name="c2"))
    api.objects[("rayclusters", "team-a", "c2")]["status"] = {
        "conditions": [{"type": "HeadPodReady", "status": "False"}]
    }
    with pytest.raises(raymlp.errors.TimeoutError) as info:
        cluster.wait(timeout_s=0.2, poll_s=0.05)
    assert isinstance(info.value, builtins.TimeoutError)
    assert info.value.timeout_s == 0.2 and info.value.what == "RayCluster c2 to be ready"
    assert info.value.last_status.conditions == {"HeadPodReady": "False"}
    assert "HeadPodReady" in str(info.value)


def test_a_failed_raycluster_is_a_kubernetes_error_not_a_job_error(api, kuberay):
    cluster = kuberay.apply(RayClusterSpec(name="c3"))
    api.objects[("rayclusters", "team-a", "c3")]["status"] = {"state": "failed", "reason": "HeadPodCrashLoop"}
    with pytest.raises(KubernetesError, match="RayCluster c3 failed .*HeadPodCrashLoop") as info:
        cluster.wait(timeout_s=5, poll_s=0.01)
    assert not isinstance(info.value, JobError)
    assert cluster.status().failed


def test_rayservice_ready_condition(api, kuberay, crd_dir):
    import yaml

    svc = yaml.safe_load((crd_dir / "samples" / "ray-service.sample.yaml").read_text())
    kuberay.apply(svc)
    name = svc["metadata"]["name"]
    api.status_script[("rayservices", "team-a", name)] = [
        {"conditions": [{"type": "Ready", "status": "False", "reason": "Initializing"}]},
        {"conditions": [{"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints"}]},
    ]
    assert kuberay.wait("RayService", name, timeout_s=10, poll_s=0.01).ready


def test_logs_delete_and_api_errors(api, kuberay):
    job = kuberay.apply(_job())
    api.pods["train"] = [{"metadata": {"name": "train-abc12", "creationTimestamp": "2026-01-01T00:00:00Z"}}]
    api.logs["train-abc12"] = "step 1 loss 0.5\nSUCCEEDED\n"
    assert job.logs() == kuberay.logs("train") == "step 1 loss 0.5\nSUCCEEDED\n"
    with pytest.raises(SpecError, match="kind must be one of \\['RayJob'\\]"):
        kuberay.apply(RayClusterSpec(name="c4")).logs()
    with pytest.raises(KubernetesError, match="no submitter pod"):
        kuberay.logs("other")
    with pytest.raises(KubernetesError) as info:
        kuberay.status("RayJob", "missing")
    assert info.value.status == 404 and 'rayjobs.ray.io "missing" not found' in str(info.value)
    assert job.delete() is True
    assert kuberay.delete("RayJob", "train") is False
    assert ("rayjobs", "team-a", "train") not in api.objects


def test_cli_apply_status_wait_delete_through_a_kubeconfig(api, cli, tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u", "namespace": "team-b"}}],
    }))
    manifest = tmp_path / "job.yaml"
    spec_file = tmp_path / "job.py"
    spec_file.write_text(
        "from raymlp.cluster import RayJobSpec\n"
        "job = RayJobSpec(name='cli-job', entrypoint='python x.py', existing_cluster='shared', runtime='image')\n"
    )
    k = ("--kubeconfig", str(kubeconfig))
    code, out, _ = cli("cluster", "apply", "--dry-run", str(spec_file), *k)
    assert (code, out.strip(), api.objects) == (0, "rayjob.ray.io/cli-job created (server dry run)", {})
    code, out, _ = cli("cluster", "apply", str(spec_file), *k)
    assert (code, out.strip()) == (0, "rayjob.ray.io/cli-job created")
    code, out, _ = cli("cluster", "render", str(spec_file))
    manifest.write_text(out + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    code, out, _ = cli("cluster", "apply", str(manifest), *k)
    assert code == 0 and "rayjob.ray.io/cli-job configured" in out and "skipped ConfigMap" in out
    api.status_script[("rayjobs", "team-b", "cli-job")] = [
        {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
        {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "DeadlineExceeded",
         "message": "activeDeadlineSeconds exceeded"},
    ]
    code, out, err = cli("cluster", "wait", "RayJob", "cli-job", "--poll", "0.01", "--timeout", "10", *k)
    assert code == 1 and "jobStatus=RUNNING" in out and "DeadlineExceeded: activeDeadlineSeconds exceeded" in err
    api.status_script[("rayjobs", "team-b", "cli-job")] = [{"jobDeploymentStatus": "Running"}] * 100
    code, _, err = cli("cluster", "wait", "RayJob", "cli-job", "--poll", "0.01", "--timeout", "0.1", *k)
    assert code == 1 and "timed out after 0.1 s waiting for RayJob cli-job to be finished" in err
    api.status_script.pop(("rayjobs", "team-b", "cli-job"))
    api.objects[("rayjobs", "team-b", "cli-job")]["status"] = {
        "jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "DeadlineExceeded"}
    code, out, _ = cli("cluster", "status", "RayJob", "cli-job", "-o", "json", *k)
    assert code == 1 and json.loads(out)["reason"] == "DeadlineExceeded"
    code, out, _ = cli("cluster", "delete", "RayJob", "cli-job", *k)
    assert (code, out.strip()) == (0, "rayjob.ray.io/cli-job deleted")
    code, _, err = cli("cluster", "status", "RayJob", "cli-job", *k)
    assert code == 2 and "HTTP 404" in err


def test_cli_apply_of_the_seed_job_uploads_its_code_then_applies(api, cli, tmp_path, s3, monkeypatch):
    env, client = s3
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u", "namespace": "team-a"}}],
    }))
    seed = REPO_ROOT / "examples" / "kuberay" / "seed_pytorchjob.py"
    spec_file = tmp_path / "seed_on_s3.py"
    # The seed job, with the storage root on the test's S3 endpoint.
    spec_file.write_text(
        "import dataclasses, runpy\n"
        "from raymlp.cluster import ResultStore\n"
        f"_seed = runpy.run_path({str(seed)!r})['job']\n"
        "job = dataclasses.replace(_seed, results=ResultStore(storage_root='s3://raymlp/seed'))\n")
    k = ("--kubeconfig", str(kubeconfig))
    code, out, _ = cli("cluster", "apply", "--dry-run", str(spec_file), *k)
    assert code == 0 and out.count("would upload") == 2
    assert not client.list_objects_v2(Bucket="raymlp", Prefix="seed/").get("Contents")
    code, out, _ = cli("cluster", "apply", str(spec_file), *k)
    assert code == 0 and out.count("uploaded") == 2 and "rayjob.ray.io/pytorchjob-seed created" in out
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="raymlp", Prefix="seed/code/")["Contents"])
    stored = yaml.safe_load(api.objects[("rayjobs", "team-a", "pytorchjob-seed")]["spec"]["runtimeEnvYAML"])
    assert sorted([stored["working_dir"], *stored["py_modules"]]) == [f"s3://raymlp/{k}" for k in keys]
