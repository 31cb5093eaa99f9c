"""Canary rollout with raymlp.serve: deploy a model, send traffic, move a canary 10 % -> 100 %.

Two versions of a scikit-learn model are registered in the MLflow registry; version 1 serves
as ``models:/iris-demo@champion``, version 2 comes in as a canary at 10 %, then 50 %, then is
promoted. After each step the script sends requests over the Open Inference Protocol v2 and
prints how many each variant answered.

    python examples/serve_canary.py [--requests 500] [--port 8000]
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from collections import Counter

import numpy as np


def send(url: str, n: int) -> Counter:
    """POST ``n`` v2 infer requests; count the answering variant of each."""
    body = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32",
                                   "data": [0.2, 0.4, 0.6, 0.8]}]}).encode()
    counts: Counter = Counter()
    for _ in range(n):
        req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            counts[r.headers["x-raymlp-variant"]] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    import raymlp
    from raymlp import serve, tracking

    raymlp.init()
    rng = np.random.RandomState(0)
    x = rng.rand(200, 4).astype(np.float32)
    y = (x.sum(axis=1) > 2).astype(np.int64)
    versions = []
    for c in (1.0, 0.1):
        model = LogisticRegression(C=c).fit(x, y)
        with tracking.start_run(f"iris-demo-C{c}") as run:
            uri = run.log_model(model, flavor="sklearn",
                                signature=infer_signature(x, model.predict(x)))
        versions.append(tracking.register_model(uri, "iris-demo", alias="champion").version)
    tracking.set_alias("iris-demo", "champion", versions[0])

    spec = serve.InferenceService(name="iris-demo", model="models:/iris-demo@champion",
                                  resources=serve.Resources(cpus=0.5))
    service = spec.deploy(port=args.port)  # the handle of the running service
    url = f"{service.url}/v2/models/iris-demo/infer"
    print(f"serving {service.status().stable.uri} at {service.url}")
    print("stable only  :", dict(send(url, args.requests)))
    service.canary(f"models:/iris-demo/{versions[1]}", percent=10)
    print("canary  10 % :", dict(send(url, args.requests)))
    service.set_canary_percent(50)
    print("canary  50 % :", dict(send(url, args.requests)))
    st = service.promote()
    print(f"promoted     : {dict(send(url, args.requests))} (stable is now {st.stable.uri})")
    service.delete()


if __name__ == "__main__":
    main()
