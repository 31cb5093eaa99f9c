"""Services under stress on the session's Ray instance, through Ray Serve's HAProxy ingress:
a raymlp.train model served by alias (acceptance 1), autoscaling up, down and to zero with the
cold start measured (3), and a replica SIGKILLed under load (5)."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import requests

from raymlp._ray_compat import serve_client
from tests.helpers import free_port, infer_body, wait_for

pytestmark = pytest.mark.timeout(300)

SKLEARN = "rs-iris"  # registered model name; the services are named rs-*
DIGITS = "rs-digits"


@pytest.fixture(scope="module")
def sklearn_model(ray_session):
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    from raymlp import serve, tracking

    rng = np.random.RandomState(1)
    x = rng.rand(200, 4).astype(np.float32)
    y = (x[:, 0] > x[:, 2]).astype(np.int64)
    model = LogisticRegression().fit(x, y)
    with tracking.start_run("resilience-sklearn") as run:
        uri = run.log_model(model, flavor="sklearn", signature=infer_signature(x, model.predict(x)))
    tracking.register_model(uri, SKLEARN, alias="live")
    serve.start(port=free_port())
    yield {"x": x, "model": model, "uri": f"models:/{SKLEARN}@live"}
    from ray import serve as ray_serve

    for name in serve.list_services():
        if name.startswith("rs-"):
            ray_serve.delete(name, _blocking=False)  # replicas drain ~30 s; do not wait


class _Load:
    """``threads`` clients each sending requests back to back; counts what is not a 200."""

    def __init__(self, url, body, threads):
        self.url, self.body = url, body
        self.sent = self.failed = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        with requests.Session() as s:
            while not self._stop.is_set():
                try:
                    r = s.post(self.url, json=self.body, timeout=60)
                    error = None if r.status_code == 200 else f"{r.status_code} {r.text[:200]}"
                except requests.RequestException as exc:
                    error = f"{type(exc).__name__}: {exc}"[:300]
                with self._lock:
                    self.sent += 1
                    if error:
                        self.failed += 1
                        self.errors.append(error)

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=90)


def _status_when(name, condition):
    """The service's status when ``condition`` holds for it, else None (for wait_for)."""
    from raymlp import serve

    st = serve.get(name).status()
    return st if condition(st) else None


def _running(name):
    """replica id -> pid of the RUNNING replicas of service ``name``."""
    return {r["replica_id"]: r["pid"] for r in _replicas(name) if r["state"] == "RUNNING"}


def _replaced(running, victim_id):
    """``running`` once it holds two replicas, none of them ``victim_id``; else None."""
    return running if len(running) == 2 and victim_id not in running else None


def _replicas(name):
    """Serve's replica entries of service ``name`` (state, pid, actor id)."""
    app = serve_client().get_serve_details()["applications"][name]
    return app["deployments"]["predictor"]["replicas"]


# --- acceptance 1: a raymlp.train model served by alias ------------------------------------

def test_trained_model_deployed_by_alias_answers_what_it_predicts_locally(
        sklearn_model, digits_job, examples_path):
    import torch
    import train_digits

    from raymlp import serve, tracking

    _, result = digits_job  # the session's raymlp.train digits job (2 workers)
    version = result.register(DIGITS, alias="champion")
    svc = serve.InferenceService(name=DIGITS, model=f"models:/{DIGITS}@champion",
                                 resources=serve.Resources(cpus=0.25)).deploy()
    st = svc.status()
    assert st.status == "RUNNING" and st.stable.version == str(version.version)

    _, x, _, _ = train_digits.load_digits_split()
    x = x[:9]
    local = tracking.load_model(f"models:/{DIGITS}@champion", flavor="pytorch")
    if not isinstance(local, torch.nn.Module):  # a torch.export program (pt2)
        local = local.module()
    # The replica runs torch on int(cpus) or 1 thread; BLAS sums in another order with
    # more threads (1 ulp apart), so predict locally on one thread too for an exact match.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            want = local(torch.from_numpy(x)).numpy()
    finally:
        torch.set_num_threads(threads)
    assert want.shape == (9, 10) and want.dtype == np.float32

    r = requests.post(f"{st.url}/v2/models/{DIGITS}/infer", json=infer_body(x), timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"]
    assert len(out) == 1 and out[0]["datatype"] == "FP32" and out[0]["shape"] == [9, 10]
    got = np.asarray(out[0]["data"], dtype=np.float32).reshape(9, 10)
    np.testing.assert_array_equal(got, want)
    assert r.json()["model_version"] == str(version.version)

    r = requests.post(f"{st.url}/v1/models/{DIGITS}:predict", json={"instances": x.tolist()},
                      timeout=60)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(np.asarray(r.json()["predictions"], dtype=np.float32), want)
    assert (np.argmax(got, 1) == np.argmax(want, 1)).all()

    meta = requests.get(f"{st.url}/v2/models/{DIGITS}", timeout=30).json()
    assert meta["platform"] == "mlflow-pytorch" and meta["versions"] == [str(version.version)]
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [{"name": "output-0", "datatype": "FP32", "shape": [-1, 10]}]


# --- acceptance 3: autoscaling ------------------------------------------------------------

def test_load_scales_replicas_up_and_idle_scales_them_back_to_the_minimum(sklearn_model):
    from raymlp import serve

    name = "rs-autoscale"
    st = serve.InferenceService(
        name=name, model=sklearn_model["uri"], resources=serve.Resources(cpus=0.25),
        autoscaling=serve.Autoscaling(min_replicas=1, max_replicas=2, target_ongoing_requests=0.25,
                                      upscale_delay_s=1.0, downscale_delay_s=15.0)
    ).deploy().status()
    # The downscale delay outlasts a replica's start on a busy 2-core machine (8-14 s): a
    # shorter one removes the new replica before it runs, as its metrics read 0 meanwhile.
    assert st.status == "RUNNING" and st.replicas == 1 and st.target_replicas == 1
    x = sklearn_model["x"][:64]  # a larger batch keeps each request in flight a little longer
    url = f"{st.url}/v2/models/{name}/infer"
    with _Load(url, infer_body(x), threads=8) as load:
        # Bounded generously: with the whole suite's leftovers on 2 cores, a replica's start
        # alone has taken over a minute.
        up = wait_for("a second replica under load",
                       lambda: _status_when(name, lambda s: s.replicas >= 2),
                       timeout=150)
        time.sleep(1.0)
    print(f"\nautoscaling: {up.replicas} replicas (target {up.target_replicas}) under load of 8 "
          f"clients; {load.sent} requests, {load.failed} failed")
    assert up.replicas == 2 and up.target_replicas == 2
    assert load.failed == 0, load.errors[:5]
    down = wait_for("scale down to the minimum after the load",
                     lambda: _status_when(name, lambda s: s.replicas == s.target_replicas == 1),
                     timeout=90)
    assert down.status == "RUNNING"
    r = requests.post(url, json=infer_body(x[:3]), timeout=60)
    assert r.status_code == 200
    assert r.json()["outputs"][0]["data"] == sklearn_model["model"].predict(x[:3]).tolist()


def test_min_replicas_zero_scales_to_zero_and_the_next_request_cold_starts(sklearn_model):
    from raymlp import serve

    name = "rs-zero"
    st = serve.InferenceService(
        name=name, model=sklearn_model["uri"], resources=serve.Resources(cpus=0.25),
        autoscaling=serve.Autoscaling(min_replicas=0, max_replicas=1, target_ongoing_requests=1,
                                      upscale_delay_s=0.0, downscale_delay_s=2.0)).deploy()
    x = sklearn_model["x"][:5]
    want = sklearn_model["model"].predict(x).tolist()
    url = f"{st.url}/v2/models/{name}/infer"
    idle = wait_for("scale to zero when idle",
                     lambda: _status_when(name, lambda s: s.replicas == s.target_replicas == 0),
                     timeout=90)
    assert idle.replicas == 0
    # A stopped replica drains for a while and still answers: wait until it is gone, so the
    # next request really starts one.
    wait_for("the drained replica to stop", lambda: _replicas(name) == [], timeout=90)

    started = time.monotonic()
    r = requests.post(url, json=infer_body(x), timeout=120)
    cold = time.monotonic() - started
    print(f"\nscale to zero: cold start {cold:.2f} s (HTTP {r.status_code})")
    assert r.status_code == 200, f"cold start after {cold:.2f} s: {r.status_code} {r.text}"
    assert r.json()["outputs"][0]["data"] == want, f"cold start {cold:.2f} s"
    assert st.status().replicas == 1
    started = time.monotonic()
    r = requests.post(url, json=infer_body(x), timeout=30)
    warm = time.monotonic() - started
    assert r.status_code == 200 and warm < cold, f"cold {cold:.2f} s, warm {warm:.3f} s"


# --- acceptance 5: a replica killed under load ---------------------------------------------

def test_killed_replica_is_replaced_and_only_its_in_flight_requests_fail(sklearn_model):
    from raymlp import serve

    name = "rs-kill"
    max_ongoing = 4
    svc = serve.InferenceService(name=name, model=sklearn_model["uri"], replicas=2,
                                 max_ongoing_requests=max_ongoing,
                                 resources=serve.Resources(cpus=0.25)).deploy()
    st = svc.status()
    assert st.replicas == 2
    x = sklearn_model["x"][:8]
    url = f"{st.url}/v2/models/{name}/infer"
    before = _running(name)
    assert len(before) == 2, before
    victim_id, victim_pid = min(before.items())
    # Keep-alive clients, as real ones are: the proxy's reload when the replica set changes
    # must not cost their pooled connections more than the in-flight bound either.
    with _Load(url, infer_body(x), threads=6) as load:
        time.sleep(3.0)
        sent_before_kill = load.sent
        assert sent_before_kill > 0 and load.failed == 0, load.errors[:5]
        os.kill(victim_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        recovered = wait_for(
            "a replacement replica",
            lambda: _replaced(_running(name), victim_id), timeout=120)
        recovery = time.monotonic() - killed_at
        time.sleep(3.0)  # keep the load on the recovered service a while
    print(f"\nreplica killed under load: {load.failed} of {load.sent} requests failed "
          f"(max_ongoing_requests={max_ongoing}); 2 replicas again after {recovery:.1f} s; "
          f"errors: {load.errors}")
    assert victim_pid not in recovered.values()
    after = svc.status()
    assert after.replicas == 2 and after.status == "RUNNING"
    assert load.sent - sent_before_kill > 10, "the load stalled after the kill"
    assert load.failed <= max_ongoing, (load.failed, load.errors[:10])
    r = requests.post(url, json=infer_body(x), timeout=30)
    assert r.status_code == 200
    assert r.json()["outputs"][0]["data"] == sklearn_model["model"].predict(x).tolist()
