"""Payload logging: every request and its answer reach a JSON-lines file or an HTTP collector."""

from __future__ import annotations

import http.server
import json
import threading

import numpy as np
import pytest
import requests

from tests.helpers import drop_services, free_port, infer_body, wait_for

pytestmark = pytest.mark.timeout(300)

NAME = "pl-svc"


@pytest.fixture(scope="module")
def model(ray_session):
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    from raymlp import tracking

    x = np.random.RandomState(1).rand(50, 3).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5], dtype=np.float32)
    reg = LinearRegression().fit(x, y)
    with tracking.start_run("payload-model") as run:
        uri = run.log_model(reg, flavor="sklearn", signature=infer_signature(x, reg.predict(x)))
    tracking.register_model(uri, NAME, alias="champion")
    yield {"x": x, "model": reg}
    drop_services(NAME)


class _Collector(http.server.BaseHTTPRequestHandler):
    batches: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).batches.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_requests_and_answers_are_logged_to_a_file_then_to_an_http_sink(model, tmp_path):
    from raymlp import serve

    serve.start(port=free_port())
    log = tmp_path / "payloads.jsonl"
    st = serve.InferenceService(name=NAME, model=f"models:/{NAME}@champion", payload_log=str(log),
                                resources=serve.Resources(cpus=0.25)).deploy()
    x = model["x"][:4]
    url = f"{st.url}/v2/models/{NAME}/infer"
    ok = requests.post(url, json=infer_body(x, id="req-1"), timeout=30)
    assert ok.status_code == 200
    bad = requests.post(url, json={"inputs": [{"name": "input-0", "shape": [2, 3],
                                               "datatype": "FP32", "data": [1.0]}]}, timeout=30)
    assert bad.status_code == 400
    v1 = requests.post(f"{st.url}/v1/models/{NAME}:predict",
                       json={"instances": x[:2].tolist()}, timeout=30)
    assert v1.status_code == 200

    lines = wait_for("3 logged records", lambda: log.exists() and len(
        log.read_text().splitlines()) >= 3 and log.read_text().splitlines())
    records = [json.loads(line) for line in lines]
    by_status = {(r["endpoint"], r["status"]): r for r in records}
    good = by_status[("v2", 200)]
    assert good["id"] == "req-1" and good["variant"] == "stable" and good["service"] == NAME
    assert good["request"]["inputs"][0]["data"] == x.reshape(-1).tolist()
    expected = model["model"].predict(x)
    np.testing.assert_allclose(good["response"]["outputs"][0]["data"], expected, rtol=1e-5)
    assert good["model_uri"].startswith(f"models:/{NAME}/") and good["latency_ms"] > 0
    assert "error" in by_status[("v2", 400)]["response"]
    np.testing.assert_allclose(by_status[("v1", 200)]["response"]["predictions"], expected[:2],
                               rtol=1e-5)

    # Switching the sink to an HTTP collector is a live update of the same service.
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        serve.InferenceService(name=NAME, model=f"models:/{NAME}@champion",
                               payload_log=f"http://127.0.0.1:{port}/collect",
                               resources=serve.Resources(cpus=0.25)).deploy()
        for _ in range(5):
            r = requests.post(url, json=infer_body(x, id="req-1"), timeout=30)
            assert r.status_code == 200
        posted = wait_for("5 records posted", lambda: (
            [r for b in _Collector.batches for r in b] if
            sum(len(b) for b in _Collector.batches) >= 5 else None))
        assert all(r["status"] == 200 and r["endpoint"] == "v2" for r in posted)
        assert len(log.read_text().splitlines()) == len(lines)  # the file sink was closed
    finally:
        server.shutdown()
