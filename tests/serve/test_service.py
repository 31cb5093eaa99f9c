"""A real service on the session's Ray instance: real MLflow models, real HTTP through Ray
Serve's HAProxy ingress. Covers the protocol (acceptance 1 for sklearn models, 4), the canary
driven through the Service handle from deploy to promote (2), waits that run out, and the CLI
joined to the session's cluster."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter

import numpy as np
import pytest
import requests

from raymlp.errors import ServiceError, SpecError, TimeoutError
from tests.helpers import drop_services, free_port, infer_body, wait_for

pytestmark = pytest.mark.timeout(300)

NAME = "iris"


@pytest.fixture(scope="module")
def models(ray_session):
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    from raymlp import tracking

    rng = np.random.RandomState(0)
    x = rng.rand(200, 4).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 1).astype(np.int64)
    first = LogisticRegression().fit(x, y)
    second = LogisticRegression(C=0.5).fit(x, 1 - y)
    out = {"x": x, "first": first, "second": second}
    for key, model in (("first", first), ("second", second)):
        with tracking.start_run(f"serve-{key}") as run:
            uri = run.log_model(model, flavor="sklearn",
                                signature=infer_signature(x, model.predict(x)))
        out[f"{key}_version"] = tracking.register_model(uri, NAME, alias=key).version
    return out


@pytest.fixture(scope="module")
def service(models):
    from raymlp import serve

    serve.start(port=free_port())
    svc = serve.InferenceService(name=NAME, model=f"models:/{NAME}@first",
                                 resources=serve.Resources(cpus=0.25),
                                 max_request_bytes=64 * 1024).deploy()
    yield svc
    drop_services()


@pytest.fixture
def http():
    with requests.Session() as s:
        yield s


def test_deploy_by_alias_pins_version_and_returns_a_running_handle(service, models):
    from raymlp import serve

    assert isinstance(service, serve.Service) and service.name == NAME
    st = service.status()
    assert st.status == "RUNNING" and st.replicas == 1
    assert st.stable.version == str(models["first_version"])
    assert st.stable.uri == f"models:/{NAME}/{models['first_version']}"
    assert service.url.endswith(f"/{NAME}") and st.url == service.url and st.canary is None
    assert service.wait(timeout_s=30) == st
    assert serve.get(NAME) == service  # the same service, found by name
    page = st._repr_html_()
    assert "RUNNING" in page and st.stable.uri in page


def test_unknown_service_and_waits_that_run_out(service, models):
    from raymlp import serve

    with pytest.raises(ServiceError, match="no inference service named 'ghost'"):
        serve.get("ghost")
    spec = serve.InferenceService(name="iris-slow", model=f"models:/{NAME}@first",
                                  resources=serve.Resources(cpus=0.25))
    with pytest.raises(TimeoutError) as info:
        spec.deploy(timeout_s=0.01)  # a replica takes seconds to start
    assert info.value.timeout_s == 0.01 and "iris-slow" in info.value.what
    # The deploy goes on after the wait ran out: the handle waits for it.
    slow = wait_for("the service to be registered", lambda: "iris-slow" in serve.list_services())
    assert slow
    slow = serve.get("iris-slow")
    assert slow.wait(timeout_s=120).status == "RUNNING"
    slow.delete()
    assert "iris-slow" not in serve.list_services()


def test_v2_infer_and_v1_predict_answer_what_the_model_predicts(service, models, http):
    x = models["x"][:7]
    want = models["first"].predict(x).tolist()
    r = http.post(f"{service.url}/v2/models/{NAME}/infer", json={"id": "a1", **infer_body(x)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == NAME and body["id"] == "a1"
    assert body["model_version"] == str(models["first_version"])
    assert body["outputs"][0]["data"] == want and body["outputs"][0]["shape"] == [7]
    assert body["outputs"][0]["datatype"] == "INT64"
    r = http.post(f"{service.url}/v1/models/{NAME}:predict", json={"instances": x.tolist()})
    assert r.status_code == 200 and r.json() == {"predictions": want}


def test_a_standard_oip_client_works_unmodified_in_json_and_binary(service, models):
    """tritonclient, Triton's client for the KServe v2 protocol, with its defaults (binary
    tensor data extension) and in plain JSON."""
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=service.url.split("://", 1)[1])
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(NAME)
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        meta = client.get_model_metadata(NAME)
        assert meta["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
        x = models["x"][:9]
        want = models["first"].predict(x)
        for binary in (True, False):
            inp = triton.InferInput("input-0", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            out = triton.InferRequestedOutput("output-0", binary_data=binary)
            res = client.infer(NAME, [inp], outputs=[out], request_id=f"b{binary}")
            np.testing.assert_array_equal(res.as_numpy("output-0"), want)
            assert res.get_response()["id"] == f"b{binary}"
        res = client.infer(NAME, [inp])  # no outputs named: all come back binary
        assert res.get_output("output-0")["parameters"]["binary_data_size"] == 9 * 8
        np.testing.assert_array_equal(res.as_numpy("output-0"), want)
    finally:
        client.close()


def test_health_and_metadata_list_the_signature(service, http):
    assert http.get(f"{service.url}/v2/health/live").json() == {"live": True}
    assert http.get(f"{service.url}/v2/health/ready").json() == {"ready": True}
    assert http.get(f"{service.url}/v2/models/{NAME}/ready").json()["ready"] is True
    meta = http.get(f"{service.url}/v2/models/{NAME}").json()
    assert meta["name"] == NAME and meta["platform"] == "mlflow-sklearn"
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]


BAD = [
    ("wrong shape", {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP32",
                                 "data": [1, 2, 3]}]}, 400, "shape [1, 3]"),
    ("data does not fill shape", {"inputs": [{"name": "input-0", "shape": [2, 4],
                                              "datatype": "FP32", "data": [1, 2, 3, 4]}]},
     400, "do not fill"),
    ("wrong datatype", {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "INT64",
                                    "data": [1, 2, 3, 4]}]}, 400, "datatype INT64"),
    ("strings as FP32", {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32",
                                     "data": ["a", "b", "c", "d"]}]}, 400, "FP32"),
    ("missing input", {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                   "data": [1, 2, 3, 4]}]}, 400, "missing input"),
    ("no inputs field", {"id": "1"}, 400, "inputs"),
    ("unknown datatype", {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP8",
                                      "data": [1, 2, 3, 4]}]}, 400, "unknown datatype"),
]


@pytest.mark.parametrize("case, body, code, fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_infer_request_gets_4xx_json_naming_the_problem(service, http, case, body, code,
                                                            fragment):
    r = http.post(f"{service.url}/v2/models/{NAME}/infer", json=body)
    assert r.status_code == code, r.text
    assert fragment in r.json()["error"]


def test_unknown_model_non_json_and_oversized_bodies_are_4xx(service, http):
    r = http.post(f"{service.url}/v2/models/nope/infer", json=infer_body(np.ones((1, 4))))
    assert r.status_code == 404 and "'nope' not found" in r.json()["error"]
    r = http.post(f"{service.url}/v2/models/{NAME}/infer", data=b"{not json",
                  headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    big = json.dumps(infer_body(np.ones((5000, 4), dtype=np.float32)))
    assert len(big) > 64 * 1024
    r = http.post(f"{service.url}/v2/models/{NAME}/infer", data=big,
                  headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over the limit" in r.json()["error"]
    r = http.post(f"{service.url}/v1/models/{NAME}:predict", json={"instances": [[1, 2]]})
    assert r.status_code == 400 and "shape" in r.json()["error"]


def test_thousand_malformed_requests_leave_the_service_healthy(service, models, http):
    bodies = [b"", b"[]", b"{\"inputs\": 3}", b"\xff\xfe", json.dumps(BAD[0][1]).encode()]
    codes = Counter()
    for i in range(1000):
        r = http.post(f"{service.url}/v2/models/{NAME}/infer", data=bodies[i % len(bodies)],
                      headers={"content-type": "application/json"})
        codes[r.status_code] += 1
    assert set(codes) == {400}, codes
    x = models["x"][:3]
    r = http.post(f"{service.url}/v2/models/{NAME}/infer", json=infer_body(x))
    assert r.status_code == 200
    assert r.json()["outputs"][0]["data"] == models["first"].predict(x).tolist()


def _variant_counts(url, n, sessions=4):
    def worker(k):
        c = Counter()
        with requests.Session() as s:
            for _ in range(k):
                r = s.post(f"{url}/v2/models/{NAME}/infer", json=infer_body(np.ones((1, 4))))
                assert r.status_code == 200, r.text
                c[r.headers["x-raymlp-variant"]] += 1
        return c

    with concurrent.futures.ThreadPoolExecutor(sessions) as pool:
        return sum(pool.map(worker, [n // sessions] * sessions), Counter())


class _Load:
    """Constant background load; counts every response that is not a 200."""

    def __init__(self, url, x, rate=40.0):
        self.url, self.x, self.period = url, x, 1.0 / rate
        self.sent = self.failed = 0
        self.variants = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with requests.Session() as s:
            while not self._stop.is_set():
                t = time.monotonic()
                try:
                    r = s.post(f"{self.url}/v2/models/{NAME}/infer", json=infer_body(self.x),
                               timeout=30)
                    ok = r.status_code == 200
                    if ok:
                        self.variants[r.headers["x-raymlp-variant"]] += 1
                except requests.RequestException:
                    ok = False
                self.sent += 1
                self.failed += not ok
                time.sleep(max(0.0, self.period - (time.monotonic() - t)))

    def __enter__(self):
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=60)
        self.elapsed = time.monotonic() - self.started


def test_canary_split_promote_and_rollback_lose_no_request(service, models):
    second = f"models:/{NAME}/{models['second_version']}"
    x = models["x"][:1]
    with _Load(service.url, x) as load:
        st = service.canary(second, percent=10)
        assert st.canary.version == str(models["second_version"]) and st.canary.percent == 10
        assert st.stable.percent == 90
        counts = _variant_counts(service.url, 2000)
        assert sum(counts.values()) == 2000
        assert 140 <= counts["canary"] <= 260, counts  # 10 % +/- 3 %

        # A/B: a caller key always lands on the same variant.
        with requests.Session() as s:
            seen = {s.post(f"{service.url}/v2/models/{NAME}/infer", json=infer_body(x),
                           headers={"x-raymlp-route-key": "user-42"}).headers["x-raymlp-variant"]
                    for _ in range(30)}
        assert len(seen) == 1

        st = service.promote()
        assert st.canary is None and st.stable.version == str(models["second_version"])
        assert _variant_counts(service.url, 200) == Counter({"stable": 200})
        r = requests.post(f"{service.url}/v2/models/{NAME}/infer", json=infer_body(x))
        assert r.json()["model_version"] == str(models["second_version"])

        st = service.canary(f"models:/{NAME}/{models['first_version']}", percent=50)
        assert st.canary.percent == 50
        st = service.set_canary_percent(30)
        assert st.canary.percent == 30 and st.stable.percent == 70
        st = service.rollback()
        assert st.canary is None and st.stable.version == str(models["second_version"])
        r = requests.post(f"{service.url}/v2/models/{NAME}/infer", json=infer_body(x))
        assert r.json()["model_version"] == str(models["second_version"])
        assert r.json()["outputs"][0]["data"] == models["second"].predict(x).tolist()
        # back to the first model for the tests that follow
        service.canary(f"models:/{NAME}@first", percent=100)
        service.promote()
    assert load.failed == 0, f"{load.failed} of {load.sent} requests failed"
    assert load.sent / load.elapsed >= 20, (load.sent, load.elapsed)
    assert load.variants["canary"] > 0 and load.variants["stable"] > 0


def test_rollout_errors_name_the_service(service, models):
    with pytest.raises(ServiceError, match=f"service '{NAME}' has no canary to promote"):
        service.promote()
    with pytest.raises(ServiceError, match="no canary to roll back"):
        service.rollback()
    with pytest.raises(ServiceError, match="has no canary"):
        service.set_canary_percent(20)
    with pytest.raises(SpecError, match="canary.percent") as info:
        service.canary(f"models:/{NAME}/{models['second_version']}", percent=150)
    assert info.value.field == "canary.percent"
    with pytest.raises(SpecError, match="canary.model"):
        service.canary("models:/iris/latest", percent=10)


def test_cli_status_list_and_errors(service, ray_session):
    env = {**os.environ, "RAY_ADDRESS": ray_session.address}
    cmd = [sys.executable, "-m", "raymlp.cli", "serve"]
    out = subprocess.run(cmd + ["status", NAME], env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    assert st["name"] == NAME and st["status"] == "RUNNING" and st["url"] == service.url
    out = subprocess.run(cmd + ["list"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and out.stdout.startswith(f"{NAME}\tRUNNING\t{service.url}")
    out = subprocess.run(cmd + ["rollback", NAME], env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 2 and "no canary to roll back" in out.stderr


def test_bearer_token_service_and_delete(service, models, http):
    from raymlp import serve

    auth = serve.InferenceService(name="iris-auth", model=f"models:/{NAME}@first",
                                  auth_token="s3cret-token",
                                  resources=serve.Resources(cpus=0.25)).deploy()
    x = models["x"][:2]
    url = f"{auth.url}/v2/models/iris-auth/infer"
    r = http.post(url, json=infer_body(x))
    assert r.status_code == 401 and "bearer token" in r.json()["error"]
    r = http.post(url, json=infer_body(x), headers={"authorization": "Bearer s3cret-token"})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == \
        models["first"].predict(x).tolist()
    assert "iris-auth" in serve.list_services()
    auth.delete()
    assert "iris-auth" not in serve.list_services()
    with pytest.raises(ServiceError, match="no inference service named 'iris-auth'"):
        auth.status()


def test_canary_example_moves_traffic_from_10_to_100_percent(service, ray_session):
    # Run as a user runs it, joined to the session's Ray instance (and its Serve).
    import ast
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "RAY_ADDRESS": ray_session.address}
    out = subprocess.run([sys.executable, str(repo / "examples" / "serve_canary.py"),
                          "--requests", "300"], env=env, capture_output=True, text=True,
                         timeout=280, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = {line.split(":")[0].strip(): line for line in out.stdout.splitlines() if ":" in line}
    assert "{'stable': 300}" in lines["stable only"]
    ten = ast.literal_eval(lines["canary  10 %"].split(":", 1)[1].strip())
    assert sum(ten.values()) == 300 and 5 <= ten.get("canary", 0) <= 60
    half = ast.literal_eval(lines["canary  50 %"].split(":", 1)[1].strip())
    assert 90 <= half.get("canary", 0) <= 210
    assert "{'stable': 300}" in lines["promoted"]
