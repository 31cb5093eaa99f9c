"""Transformers on a real service: user pre/post-processing in the replicas, the request checked
against the transformer's declared tensors, errors mapped to 400 (rejected input) and 500 (a
transformer bug), and a live swap of the transformer."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from raymlp import serve
from tests.helpers import drop_services, free_port, infer_body

pytestmark = pytest.mark.timeout(300)

NAME = "tf-svc"
LABELS = ["setosa", "versicolor", "virginica"]


class Standardize(serve.Transformer):
    """Raw centimetres in, species names out; the model sees standardized float32 features."""

    inputs = [("measurements", "FP64", [-1, 4])]
    outputs = [("species", "BYTES", [-1])]

    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def preprocess(self, inputs):
        x = inputs["measurements"]
        if (x < 0).any():
            raise ValueError("measurements must be non-negative centimetres")
        return ((x - self.mean) / self.std).astype(np.float32)

    def postprocess(self, outputs):
        return np.asarray(LABELS, dtype=object)[next(iter(outputs.values()))]


class AsyncNamedThenBroken(serve.Transformer):
    """Async preprocess returning the model's named input; a postprocess with a bug."""

    async def preprocess(self, inputs):
        return {"input-0": np.asarray(inputs["x"], dtype=np.float32)}

    def postprocess(self, outputs):
        raise RuntimeError("bug in postprocess")


@pytest.fixture(scope="module")
def service(ray_session):
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from raymlp import tracking

    x, y = load_iris(return_X_y=True)
    mean, std = x.mean(axis=0), x.std(axis=0)
    xs = ((x - mean) / std).astype(np.float32)
    clf = LogisticRegression(max_iter=500).fit(xs, y)
    with tracking.start_run("transformer-model") as run:
        uri = run.log_model(clf, flavor="sklearn", signature=infer_signature(xs, clf.predict(xs)))
    serve.start(port=free_port())
    spec = serve.InferenceService(name=NAME, model=uri, transformer=Standardize(mean, std),
                                  resources=serve.Resources(cpus=0.25))
    st = spec.deploy()
    yield st, spec, x, mean, std, clf
    drop_services(NAME)


def test_pre_and_postprocessing_wrap_the_model(service):
    st, _, x, mean, std, clf = service
    rows = x[::15]
    expected = [LABELS[i] for i in clf.predict(((rows - mean) / std).astype(np.float32))]
    assert len(set(expected)) == 3

    r = requests.post(f"{st.url}/v2/models/{NAME}/infer", timeout=30,
                      json=infer_body(rows, "measurements", "FP64"))
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("species", "BYTES", [len(rows)])
    assert out["data"] == expected

    r = requests.post(f"{st.url}/v1/models/{NAME}:predict", json={"instances": rows.tolist()},
                      timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == expected

    meta = requests.get(f"{st.url}/v2/models/{NAME}", timeout=30).json()
    assert meta["inputs"] == [{"name": "measurements", "datatype": "FP64", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "species", "datatype": "BYTES", "shape": [-1]}]
    assert st.status().transformer.endswith(":Standardize")


def test_requests_are_checked_against_the_transformer(service):
    st, *_ = service
    url = f"{st.url}/v2/models/{NAME}/infer"

    def infer(name, datatype, data):
        return requests.post(url, timeout=30, json={"inputs": [
            {"name": name, "shape": [1, 4], "datatype": datatype, "data": data}]})

    r = infer("measurements", "FP64", [5.0, -1.0, 1.4, 0.2])
    assert r.status_code == 400
    assert "preprocess rejected the input: measurements must be non-negative" in r.json()["error"]
    r = infer("measurements", "FP32", [5.0, 3.0, 1.4, 0.2])
    assert r.status_code == 400 and "does not match the model's FP64" in r.json()["error"]
    r = infer("input-0", "FP64", [5.0, 3.0, 1.4, 0.2])
    assert r.status_code == 400
    assert "missing input(s) ['measurements']; the service takes" in r.json()["error"]


def test_live_swap_to_async_transformer_and_500_for_its_bug(service):
    st, spec, x, mean, std, _clf = service
    import dataclasses

    dataclasses.replace(spec, transformer=f"{__name__}:AsyncNamedThenBroken").deploy()
    try:
        assert st.status().transformer.endswith(":AsyncNamedThenBroken")
        rows = (x[:2] - mean) / std
        r = requests.post(f"{st.url}/v2/models/{NAME}/infer", timeout=30,
                          json=infer_body(rows, "x", "FP64"))
        assert r.status_code == 500
        assert r.json()["error"] == ("the transformer's postprocess failed: RuntimeError: "
                                     "bug in postprocess")
        # The metadata is the model's again: this transformer declares no tensors.
        meta = requests.get(f"{st.url}/v2/models/{NAME}", timeout=30).json()
        assert meta["inputs"][0]["name"] == "input-0"
    finally:
        spec.deploy()
    r = requests.post(f"{st.url}/v1/models/{NAME}:predict", json={"instances": x[:1].tolist()},
                      timeout=30)
    assert r.status_code == 200 and r.json()["predictions"] == [LABELS[0]]


def test_batched_requests_each_get_their_own_answer(service):
    """Preprocess per request, one model call per batch, postprocess per request: every caller
    gets the answer for its own rows, and the replica did predict several requests at once."""
    import dataclasses
    from concurrent.futures import ThreadPoolExecutor

    st, spec, x, mean, std, clf = service
    dataclasses.replace(spec, batching=serve.Batching(max_batch_size=8, max_wait_s=0.05)).deploy()
    expected = [LABELS[i] for i in clf.predict(((x - mean) / std).astype(np.float32))]
    rows = list(range(0, 150, 3))

    def one(i):
        r = requests.post(f"{st.url}/v2/models/{NAME}/infer", timeout=60,
                          json=infer_body(x[i:i + 1], "measurements", "FP64"))
        assert r.status_code == 200, r.text
        return r.json()["outputs"][0]["data"]

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(one, rows))
    assert answers == [[expected[i]] for i in rows]
    stats = requests.get(f"{st.url}/raymlp/stats", timeout=30).json()
    assert stats["variants"][0]["device"] == "cpu"  # no GPU asked for
    sizes = stats["batch_sizes"]
    calls = {int(k): v for k, v in sizes.items()}
    assert sum(k * v for k, v in calls.items()) == len(rows)
    assert max(calls) > 1, calls


def test_cli_deploys_a_transformer_from_a_module_in_the_current_directory(
        service, ray_session, tmp_path):
    """``--transformer mod:Class`` imports from the working directory; the replicas, which cannot
    import that module, get it by value."""
    import os
    import subprocess
    import sys

    _st, spec, _x, *_ = service
    (tmp_path / "cli_tf_module.py").write_text(
        "import numpy as np\n"
        "class Upper:\n"
        "    def postprocess(self, outputs):\n"
        "        return np.asarray(['class-%d' % int(v) for v in next(iter(outputs.values()))],\n"
        "                          dtype=object)\n")
    env = {**os.environ, "RAY_ADDRESS": ray_session.address}
    cmd = [sys.executable, "-m", "raymlp.cli", "serve"]
    out = subprocess.run(cmd + ["deploy", "--name", "tf-cli", "--model", spec.model,
                                "--transformer", "cli_tf_module:Upper", "--cpus", "0.25"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    url = out.stdout.strip().splitlines()[-1]
    assert url.endswith("/tf-cli")
    r = requests.post(f"{url}/v1/models/tf-cli:predict", timeout=30,
                      json={"instances": [[0.0, 0.0, 0.0, 0.0]]})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0].startswith("class-")
    assert serve.get("tf-cli").status().transformer == "cli_tf_module:Upper"
    out = subprocess.run(cmd + ["delete", "tf-cli"], env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
