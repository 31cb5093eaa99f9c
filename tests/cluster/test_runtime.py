"""What travels with a job, where its results go, and the one-line connection errors.

The end-to-end proof on a stock-image stand-in is ``test_bare_head.py``; these are the quick
checks of each piece: the requirement list and the image recipe from one source, the rendered
RayJob's results and runtime, the packaged code on a real S3 endpoint, and the errors of
``raymlp submit`` for a head that cannot be used.
"""

from __future__ import annotations

import http.server
import importlib.metadata as md
import io
import json
import threading
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from raymlp import _config
from raymlp.cluster import (
    RayClusterSpec,
    RayJobSpec,
    ResultStore,
    WorkerGroup,
    _ship,
    validate_manifest,
)
from raymlp.cluster._submit import local_store_warning
from raymlp.errors import SpecError
from tests.cluster.conftest import BUCKET, REPO_ROOT
from tests.helpers import free_port

EXAMPLES = REPO_ROOT / "examples" / "kuberay"
DOCKERFILE = REPO_ROOT / "cluster" / "image" / "Dockerfile"
CPU = RayClusterSpec(workers=[WorkerGroup(name="cpu", replicas=1)])


def test_shipped_requirements_are_the_package_metadata_less_ray():
    base = [Requirement(r) for r in md.requires("raymlp")]
    unconditional = {r.name for r in base if r.marker is None or r.marker.evaluate({"extra": ""})}
    shipped = {Requirement(r).name for r in _ship.requirements(())}
    assert shipped == unconditional - {"ray"}
    assert "mlflow" in shipped and "torch" not in shipped
    with_extras = [Requirement(r).name for r in _ship.requirements(("torch", "s3"))]
    assert {"torch", "s3fs", "boto3"} <= set(with_extras) and "ray" not in with_extras
    # Nested extras are followed (all = torch, tensorflow, xgboost, explain).
    assert {"torch", "xgboost", "shap"} <= {Requirement(r).name for r in _ship.requirements(("all",))}
    with pytest.raises(SpecError, match="extras") as err:
        _ship.requirements(("no-such-extra",))
    assert "torch" in str(err.value)  # the allowed names are listed


def test_the_dockerfile_installs_exactly_what_a_job_ships():
    text = DOCKERFILE.read_text()
    # Regenerate with `raymlp cluster dockerfile > cluster/image/Dockerfile` when this fails.
    assert text == _ship.dockerfile()
    assert f"FROM rayproject/ray:{md.version('ray')}-py" in text and "${VARIANT}" in text
    installed = _ship.dockerfile_requirements(text)
    # What `raymlp submit` ships for a job storing on S3 (the bare-head test reads it back from
    # the job's runtime env, too).
    shipped = _ship.runtime_env({}, extras=_ship.extras_for("s3://bucket/root"))
    assert installed == shipped["pip"] == _ship.requirements(("torch", "s3"))
    assert shipped["py_modules"] == [_ship.package_dir()]
    assert _ship.runtime_env({"pip": ["x"]}, runtime="image") == {"pip": ["x"]}


def test_a_job_tracking_into_a_file_on_an_ephemeral_cluster_is_refused():
    with pytest.raises(SpecError) as err:
        RayJobSpec(name="j", entrypoint="python x.py", cluster=CPU)
    message = str(err.value)
    assert err.value.field == "RayJobSpec.results"
    assert "RayJobSpec.results" in message and "shutdown_after_finish" in message
    assert "shutdownAfterJobFinishes" in message
    with pytest.raises(SpecError, match="shutdownAfterJobFinishes"):
        RayJobSpec(name="j", entrypoint="python x.py", cluster=CPU, runtime="image",
                   env_vars={"RAYMLP_TRACKING_URI": "sqlite:///mlflow.db"})
    with pytest.raises(SpecError, match="shutdownAfterJobFinishes"):
        RayJobSpec(name="j", entrypoint="python x.py", cluster=CPU,
                   results=ResultStore(tracking_uri="file:///tmp/mlruns"))
    # Allowed explicitly, kept cluster, or a tracking server: it renders.
    for ok in ({"allow_local_results": True}, {"shutdown_after_finish": False},
               {"env_vars": {"RAYMLP_TRACKING_URI": "http://mlflow:5000"}}):
        RayJobSpec(name="j", entrypoint="python x.py", cluster=CPU, runtime="image", **ok).render()
    with pytest.raises(SpecError, match="remote storage root"):
        RayJobSpec(name="j", entrypoint="python x.py", existing_cluster="c").render()


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_the_seed_job_renders_with_cluster_mlflow_shipping_and_no_placeholder(cli):
    code, out, _ = cli("cluster", "render", str(EXAMPLES / "seed_pytorchjob.py"))
    assert code == 0
    (job,) = yaml.safe_load_all(out)
    assert validate_manifest(job) == []
    assert "your-org" not in out and str(REPO_ROOT) not in out
    assert job["metadata"]["annotations"]["raymlp.io/runtime"] == "ship"
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["pip"] == _ship.requirements(("torch", "s3"))
    root = "s3://mlflow/raymlp/code/"
    assert runtime_env["working_dir"].startswith(root + "workdir-")
    (module,) = runtime_env["py_modules"]
    assert module.startswith(root + "raymlp-") and module.endswith(".zip")
    cluster = spec["rayClusterSpec"]
    containers = [cluster["headGroupSpec"]["template"]["spec"]["containers"][0]] + [
        g["template"]["spec"]["containers"][0] for g in cluster["workerGroupSpecs"]]
    for container in containers:
        env = _env(container)
        assert env["RAYMLP_TRACKING_URI"] == "http://mlflow.mlflow.svc:5000"
        assert env["RAYMLP_STORAGE_ROOT"] == "s3://mlflow/raymlp"
        assert env["RAYMLP_EXPERIMENT"] == "pytorchjob-seed"
        assert env["AWS_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio.mlflow.svc:9000"
        assert env["AWS_SECRET_ACCESS_KEY"] == {
            "secretKeyRef": {"name": "raymlp-storage", "key": "AWS_SECRET_ACCESS_KEY"}}
    # The secret it names is the one the team namespace gets (cluster/team/base).
    kust = yaml.safe_load((REPO_ROOT / "cluster" / "team" / "base" / "kustomization.yaml").read_text())
    assert [g["name"] for g in kust["secretGenerator"]] == ["raymlp-storage"]
    # An existing cluster gets the results as the job's env_vars (no pod to put them on).
    on_existing = RayJobSpec(name="j", entrypoint="python x.py", existing_cluster="shared",
                             results=ResultStore()).render()
    assert yaml.safe_load(on_existing["spec"]["runtimeEnvYAML"])["env_vars"][
        "RAYMLP_TRACKING_URI"] == "http://mlflow.mlflow.svc:5000"


def test_apply_packages_the_code_onto_s3_as_ray_unpacks_it(s3, monkeypatch):
    env, client = s3
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    job = RayJobSpec(name="j", entrypoint="python train_ddp.py", cluster=CPU,
                     working_dir=str(EXAMPLES), results=ResultStore(storage_root=f"s3://{BUCKET}/r"))
    uploads = job.uploads()
    rendered = yaml.safe_load(job.render()["spec"]["runtimeEnvYAML"])
    assert [u for _, u, _ in uploads] == [rendered["working_dir"], *rendered["py_modules"]]
    for folder, uri, wrap in uploads:
        _ship.upload_package(folder, uri, wrap=wrap)
        _ship.upload_package(folder, uri, wrap=wrap)  # the name is the hash: kept, not redone
    names = {}
    for _, uri, _ in uploads:
        key = uri.removeprefix(f"s3://{BUCKET}/")
        data = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        names[key] = zipfile.ZipFile(io.BytesIO(data)).namelist()
    work, pkg = names.values()
    # One top-level folder each (Ray strips it); raymlp's package folder stays inside it.
    assert len({n.split("/")[0] for n in work}) == 1 and any(n.endswith("/train_ddp.py") for n in work)
    assert len({n.split("/")[0] for n in pkg}) == 1
    assert any(n.split("/", 1)[1] == "raymlp/__init__.py" for n in pkg)
    assert not any("__pycache__" in n for n in pkg)


def test_submit_warns_when_results_would_stay_on_the_head():
    warning = local_store_warning({})
    assert "RAYMLP_TRACKING_URI and RAYMLP_STORAGE_ROOT" in warning
    assert "RAYMLP_STORAGE_ROOT" in local_store_warning(
        {"RAYMLP_TRACKING_URI": "http://mlflow:5000", "RAYMLP_STORAGE_ROOT": "/data/x"})
    assert local_store_warning({"RAYMLP_TRACKING_URI": "http://mlflow:5000",
                                "RAYMLP_STORAGE_ROOT": "s3://b/r"}) is None


def test_only_explicit_settings_travel_with_a_job(monkeypatch, tmp_path):
    for var in ("RAYMLP_TRACKING_URI", "MLFLOW_TRACKING_URI", "RAYMLP_STORAGE_ROOT",
                "RAYMLP_ARTIFACT_ROOT", "RAYMLP_EXPERIMENT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAYMLP_HOME", str(tmp_path))
    monkeypatch.setenv("RAYMLP_STORAGE_ROOT", "s3://b/root")
    _config.reset()
    try:
        assert _config.explicit_env() == {"RAYMLP_STORAGE_ROOT": "s3://b/root"}
    finally:
        _config.reset()


class _OtherRay(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"ray_version": "2.59.1", "version": "4"}).encode()
        self.send_response(200 if self.path == "/api/version" else 404)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_an_unreachable_head_or_another_ray_version_is_one_line_and_exit_2(cli):
    port = free_port()
    code, out, err = cli("submit", "--dashboard", f"http://127.0.0.1:{port}", "--", "python", "-c", "1")
    (line,) = err.strip().splitlines()
    assert code == 2 and out == "" and f"http://127.0.0.1:{port}" in line and "--dashboard" in line
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OtherRay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code, _, err = cli("jobs", "list", "--dashboard", url)
        (line,) = err.strip().splitlines()
        assert code == 2 and url in line and "runs Ray 2.59.1" in line
        assert "pip install 'ray[default]==2.59.1'" in line
    finally:
        server.shutdown()


def test_ship_runtime_needs_a_known_runtime_and_extras():
    with pytest.raises(SpecError, match="RayJobSpec.runtime"):
        RayJobSpec(name="j", entrypoint="x", cluster=CPU, runtime="docker", allow_local_results=True)
    with pytest.raises(SpecError, match="RayJobSpec.extras"):
        RayJobSpec(name="j", entrypoint="x", cluster=CPU, extras=("gpu",), allow_local_results=True)
    assert Path(_ship.package_dir()).name == "raymlp"
