"""KubeRayClient against a local stand-in of the Kubernetes API server.

No live Kubernetes cluster can run here, so these tests drive the official ``kubernetes``
client against a small threaded HTTP server that implements the API surface the client uses:
``ray.io/v1`` custom objects (POST create, GET, PATCH merge-patch, DELETE) for rayclusters,
rayjobs and rayservices, and core/v1 pod list + pod log. The test itself plays the KubeRay
operator by setting ``status`` on the stored objects. What this proves: the client sends valid
manifests, creates then patches on a second apply, decodes API errors, follows status
transitions to the terminal state and reports a failed RayJob's reason. What it does not
prove: behaviour of a real API server (admission, RBAC, server-side defaulting) or operator.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client as k8s

from raymlp.cluster import KubeRayClient, KubernetesError, RayClusterSpec, RayJobSpec, WorkerGroup
from raymlp.errors import JobError, SpecError


def _merge(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


class FakeApiServer:
    """The stand-in API server; ``objects[(plural, ns, name)]`` is its store."""

    def __init__(self):
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.requests: list[tuple[str, str, str]] = []  # (method, path, content-type)
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
                return json.loads(self.rfile.read(n) or b"null")

            def _route(self, method):
                url = urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                with server.lock:
                    server.requests.append((method, url.path, self.headers.get("Content-Type", "")))
                    if parts[:3] == ["apis", "ray.io", "v1"] and parts[3] == "namespaces":
                        return self._custom(method, parts[4], parts[5], parts[6] if len(parts) > 6 else None)
                    if parts[:2] == ["api", "v1"] and parts[4] == "pods":
                        if len(parts) == 5:
                            selector = parse_qs(url.query).get("labelSelector", [""])[0]
                            job = selector.partition("job-name=")[2]
                            return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                                    "items": server.pods.get(job, [])})
                        if len(parts) == 7 and parts[6] == "log":
                            if parts[5] not in server.logs:
                                return self._status(404, "NotFound", f'pods "{parts[5]}" not found')
                            return self._send(200, server.logs[parts[5]], "text/plain")
                    return self._status(404, "NotFound", f"no route {url.path}")

            def _custom(self, method, ns, plural, name):
                if plural not in ("rayclusters", "rayjobs", "rayservices"):
                    return self._status(404, "NotFound", f"the server could not find {plural}")
                if method == "POST":
                    body = self._body()
                    key = (plural, ns, body["metadata"]["name"])
                    if key in server.objects:
                        return self._status(409, "AlreadyExists", f'{plural}.ray.io "{key[2]}" already exists')
                    body["metadata"].update(namespace=ns, resourceVersion="1", generation=1)
                    server.objects[key] = body
                    return self._send(201, body)
                key = (plural, ns, name)
                if key not in server.objects:
                    return self._status(404, "NotFound", f'{plural}.ray.io "{name}" not found')
                obj = server.objects[key]
                if method == "GET":
                    script = server.status_script.get(key)
                    if script:  # the "operator" moves the object one step per read
                        obj["status"] = script.pop(0)
                    return self._send(200, obj)
                if method == "PATCH":
                    ctype = self.headers.get("Content-Type", "")
                    if "merge-patch" not in ctype:
                        return self._status(415, "UnsupportedMediaType", f"unsupported patch type {ctype}")
                    new = _merge(obj, self._body())
                    new["metadata"]["generation"] = obj["metadata"]["generation"] + (new["spec"] != obj["spec"])
                    server.objects[key] = new
                    return self._send(200, new)
                if method == "DELETE":
                    del server.objects[key]
                    return self._send(200, {"kind": "Status", "status": "Success"})
                return self._status(405, "MethodNotAllowed", method)

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

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
    fields = dict(
        name="train",
        entrypoint="python train.py",
        cluster=RayClusterSpec(workers=[WorkerGroup(name="cpu", replicas=2)]),
    )
    fields.update(overrides)
    return RayJobSpec(**fields)


def test_apply_creates_then_patches_on_a_second_apply(api, kuberay):
    action, obj = kuberay.apply(_job())
    assert action == "created" and obj["metadata"]["namespace"] == "team-a"
    stored = api.objects[("rayjobs", "team-a", "train")]
    assert stored["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 2

    action, obj = kuberay.apply(_job(cluster=RayClusterSpec(workers=[WorkerGroup(name="cpu", replicas=3)])))
    assert action == "configured"
    stored = api.objects[("rayjobs", "team-a", "train")]
    assert stored["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 3
    assert stored["metadata"]["generation"] == 2
    methods = [(m, p) for m, p, _ in api.requests]
    assert methods == [
        ("POST", "/apis/ray.io/v1/namespaces/team-a/rayjobs"),
        ("POST", "/apis/ray.io/v1/namespaces/team-a/rayjobs"),
        ("PATCH", "/apis/ray.io/v1/namespaces/team-a/rayjobs/train"),
    ]


def test_an_invalid_manifest_is_never_sent(api, kuberay):
    manifest = _job().render()
    manifest["spec"]["ttlSecondsAfterFinished"] = 30
    manifest["spec"]["shutdownAfterJobFinishes"] = False
    with pytest.raises(SpecError, match=r"spec.ttlSecondsAfterFinished"):
        kuberay.apply(manifest)
    assert api.requests == []


def test_wait_follows_a_rayjob_to_success(api, kuberay):
    kuberay.apply(_job())
    api.status_script[("rayjobs", "team-a", "train")] = [
        {"jobDeploymentStatus": "Initializing"},
        {"jobDeploymentStatus": "Running", "jobStatus": "PENDING"},
        {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
        {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
    ]
    seen = []
    final = kuberay.wait("RayJob", "train", timeout=10, poll_s=0.01,
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
        kuberay.wait("RayJob", "train", timeout=10, poll_s=0.01)
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
    final = kuberay.wait("RayCluster", "c1", timeout=10, poll_s=0.01)
    assert final.ready and final.conditions == {"HeadPodReady": "True", "RayClusterProvisioned": "True"}
    assert api.status_script[("rayclusters", "team-a", "c1")] == []  # all three states were read


def test_wait_times_out_with_the_last_state(api, kuberay):
    kuberay.apply(RayClusterSpec(name="c2"))
    api.objects[("rayclusters", "team-a", "c2")]["status"] = {
        "conditions": [{"type": "HeadPodReady", "status": "False"}]
    }
    with pytest.raises(TimeoutError, match="HeadPodReady"):
        kuberay.wait("RayCluster", "c2", timeout=0.2, poll_s=0.05)


def test_rayservice_ready_condition(api, kuberay, crd_dir):
    import yaml

    svc = yaml.safe_load((crd_dir / "samples" / "ray-service.sample.yaml").read_text())
    kuberay.apply(svc)
    name = svc["metadata"]["name"]
    api.status_script[("rayservices", "team-a", name)] = [
        {"conditions": [{"type": "Ready", "status": "False", "reason": "Initializing"}]},
        {"conditions": [{"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints"}]},
    ]
    assert kuberay.wait("RayService", name, timeout=10, poll_s=0.01).ready


def test_logs_delete_and_api_errors(api, kuberay):
    kuberay.apply(_job())
    api.pods["train"] = [{"metadata": {"name": "train-abc12", "creationTimestamp": "2026-01-01T00:00:00Z"}}]
    api.logs["train-abc12"] = "step 1 loss 0.5\nSUCCEEDED\n"
    assert kuberay.logs("train") == "step 1 loss 0.5\nSUCCEEDED\n"
    with pytest.raises(KubernetesError, match="no submitter pod"):
        kuberay.logs("other")
    with pytest.raises(KubernetesError) as info:
        kuberay.status("RayJob", "missing")
    assert info.value.status == 404 and 'rayjobs.ray.io "missing" not found' in str(info.value)
    assert kuberay.delete("RayJob", "train") is True
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
        "job = RayJobSpec(name='cli-job', entrypoint='python x.py', existing_cluster='shared')\n"
    )
    k = ("--kubeconfig", str(kubeconfig))
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
    code, out, _ = cli("cluster", "status", "RayJob", "cli-job", "-o", "json", *k)
    assert code == 1 and json.loads(out)["reason"] == "DeadlineExceeded"
    code, out, _ = cli("cluster", "delete", "RayJob", "cli-job", *k)
    assert (code, out.strip()) == (0, "rayjob.ray.io/cli-job deleted")
    code, _, err = cli("cluster", "status", "RayJob", "cli-job", *k)
    assert code == 2 and "HTTP 404" in err
