"""The :explain endpoint (SHAP attributions that add up to the predictions) and the per-variant
Prometheus metrics, on one real service."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from tests.helpers import drop_services, free_port, wait_for

pytestmark = pytest.mark.timeout(300)

NAME = "ex-svc"


@pytest.fixture(scope="module")
def service(ray_session):
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    from raymlp import serve, tracking

    rng = np.random.RandomState(2)
    x = rng.rand(80, 4).astype(np.float32)
    y = x @ np.array([3.0, -1.0, 0.0, 2.0], dtype=np.float32) + 0.5
    reg = LinearRegression().fit(x, y)
    with tracking.start_run("explain-model") as run:
        uri = run.log_model(reg, flavor="sklearn", signature=infer_signature(x, reg.predict(x)),
                            input_example=x[:20])
    tracking.register_model(uri, NAME, alias="champion")
    serve.start(port=free_port())
    st = serve.InferenceService(name=NAME, model=f"models:/{NAME}@champion", explainer="shap",
                                resources=serve.Resources(cpus=0.25)).deploy()
    yield st, x, reg
    drop_services(NAME)


def test_explanations_are_additive_and_match_the_linear_model(service):
    st, x, reg = service
    rows = x[30:33]
    r = requests.post(f"{st.url}/v1/models/{NAME}:explain", json={"instances": rows.tolist()},
                      timeout=120)
    assert r.status_code == 200, r.text
    exp = r.json()["explanations"]
    values, base = np.asarray(exp["values"]), np.asarray(exp["base_values"])
    assert values.shape == (3, 4)
    # Local accuracy: base value plus attributions is the prediction.
    np.testing.assert_allclose(values.sum(axis=1) + base, reg.predict(rows), rtol=1e-4, atol=1e-4)
    # For a linear model each attribution is coef * (x - mean of the background).
    expected = reg.coef_ * (rows - x[:20].mean(axis=0))
    np.testing.assert_allclose(values, expected, rtol=1e-3, atol=1e-4)
    assert abs(values[:, 2]).max() < 1e-3  # the feature the target ignores


def test_explain_rejects_bad_input_and_unknown_explainers(service):
    st, _x, _ = service
    bad = requests.post(f"{st.url}/v1/models/{NAME}:explain", json={"instances": [[1.0, 2.0]]},
                        timeout=60)
    assert 400 <= bad.status_code < 500 and "error" in bad.json()
    r = requests.post(f"{st.url}/v1/models/{NAME}:explain", json={"instances": [[1.0, 2.0]]},
                      headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 400
    stats = requests.get(f"{st.url}/raymlp/stats", timeout=30).json()
    assert stats["counts"]["stable"] >= 2  # explain requests are counted like the others


def test_requests_are_counted_per_service_and_variant_in_prometheus_metrics(service):
    """Ray's metrics agent exports the replicas' counters; scraped here like Prometheus would."""
    import re

    from raymlp._ray_compat import metrics_export_port

    st, x, _ = service
    for _ in range(5):
        r = requests.post(f"{st.url}/v1/models/{NAME}:predict",
                          json={"instances": x[:2].tolist()}, timeout=30)
        assert r.status_code == 200
    port = metrics_export_port()
    pattern = re.compile(r'^ray_raymlp_serve_requests_total\{(?P<tags>[^}]*)\} (?P<n>[\d.e+]+)$',
                         re.MULTILINE)

    def exported():
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        count = sum(float(m["n"]) for m in pattern.finditer(text)
                    if f'service="{NAME}"' in m["tags"] and 'variant="stable"' in m["tags"]
                    and 'code="200"' in m["tags"])
        return text if count >= 5 else None

    text = wait_for("raymlp_serve_requests exported for the service's stable variant", exported,
                    timeout=90, period=2)
    assert "ray_raymlp_serve_latency_ms_bucket" in text
