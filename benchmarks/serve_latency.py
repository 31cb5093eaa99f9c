"""Serving overhead: raymlp.serve vs a plain FastAPI + uvicorn server, same model, one run.

Both serve the same MLflow scikit-learn model over the same Open Inference Protocol v2 JSON.
Measured: p50/p99 latency at one request at a time (keep-alive), throughput at 16 concurrent
clients (aiohttp, in a separate process so the client does not share the GIL with the plain
server), the throughput gain of raymlp's batching at 16 clients (with both p95s), and the
resident memory of one raymlp replica minus the plain server's.

Batching is measured on a torch MLP (64 -> 3 x 2048 -> 10, 8.5 M parameters) whose forward pass
dominates a request, the case batching exists for: here one row takes ~2 ms and 16 rows ~6 ms
on one thread (printed as "forward"). On a model cheaper than the HTTP work around it batching
cannot gain much: that is measured by the c16 line of the scikit-learn model.

    .venv/bin/python benchmarks/serve_latency.py [--requests 2000] [--seconds 8]

The last line is ``RESULT {...}`` (issue 4, acceptance point 6).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

PLAIN_APP = textwrap.dedent('''
    import sys, numpy as np, mlflow.sklearn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    model = mlflow.sklearn.load_model(sys.argv[1])
    app = FastAPI()

    @app.post("/v2/models/m/infer")
    async def infer(request: Request):
        body = await request.json()
        inp = body["inputs"][0]
        x = np.asarray(inp["data"], dtype=np.float32).reshape(inp["shape"])
        y = model.predict(x)
        return JSONResponse({"model_name": "m", "outputs": [{"name": "output-0",
            "shape": list(y.shape), "datatype": "INT64", "data": y.tolist()}]})

    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
''')

LOAD = textwrap.dedent('''
    import asyncio, json, sys, time, aiohttp
    url, body, seconds, conc = sys.argv[1], sys.argv[2].encode(), float(sys.argv[3]), int(sys.argv[4])
    async def main():
        lat, stop = [], time.perf_counter() + seconds
        conn = aiohttp.TCPConnector(limit=conc)
        async with aiohttp.ClientSession(connector=conn) as s:
            async def worker():
                while time.perf_counter() < stop:
                    t = time.perf_counter()
                    async with s.post(url, data=body, headers={"content-type": "application/json"}) as r:
                        await r.read()
                        if r.status != 200: raise SystemExit(f"status {r.status}")
                    lat.append(time.perf_counter() - t)
            t0 = time.perf_counter()
            await asyncio.gather(*[worker() for _ in range(conc)])
            wall = time.perf_counter() - t0
        lat.sort()
        print(json.dumps({"rps": len(lat) / wall, "p95_ms": lat[int(len(lat) * .95)] * 1e3}))
    asyncio.run(main())
''')


def _free_port() -> int:
    from raymlp._util import free_ports

    return free_ports(1)[0]


def _wait_http(url: str, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception as exc:  # 404/405 means the server is up
            if getattr(exc, "code", None):
                return
            time.sleep(0.3)
    raise TimeoutError(url)


def latency(url: str, body: str, n: int) -> tuple[float, float]:
    import http.client
    from urllib.parse import urlparse

    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port)
    out = []
    for i in range(n + 200):
        t = time.perf_counter()
        conn.request("POST", u.path, body, {"content-type": "application/json"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
        if i >= 200:
            out.append(time.perf_counter() - t)
    out.sort()
    return out[len(out) // 2] * 1e3, out[int(len(out) * 0.99)] * 1e3


def load(url: str, body: str, seconds: float, conc: int = 16) -> dict:
    out = subprocess.run([sys.executable, "-c", LOAD, url, body, str(seconds), str(conc)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _forward_ms(model, rng) -> dict[int, float]:
    """The MLP's own forward time for 1 and 16 rows on one thread (what batching amortizes)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    with torch.inference_mode():
        for rows in (1, 16):
            x = torch.from_numpy(rng.rand(rows, 64).astype(np.float32))
            for _ in range(5):
                model(x)
            t = time.perf_counter()
            for _ in range(30):
                model(x)
            out[rows] = (time.perf_counter() - t) / 30 * 1e3
    torch.set_num_threads(threads)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    os.environ.setdefault("RAYMLP_HOME", tempfile.mkdtemp(prefix="raymlp-bench-"))

    import torch
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    import raymlp
    from raymlp import serve, tracking

    rng = np.random.RandomState(0)
    x = rng.rand(500, 4).astype(np.float32)
    clf = LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(np.int64))
    width = 2048
    mlp = torch.nn.Sequential(torch.nn.Linear(64, width), torch.nn.ReLU(),
                              torch.nn.Linear(width, width), torch.nn.ReLU(),
                              torch.nn.Linear(width, width), torch.nn.ReLU(),
                              torch.nn.Linear(width, 10)).eval()
    xm = rng.rand(8, 64).astype(np.float32)
    with tracking.start_run("bench") as run:
        sk_uri = run.log_model(clf, flavor="sklearn", name="sk",
                               signature=infer_signature(x, clf.predict(x)))
        mlp_uri = run.log_model(mlp, flavor="torch", name="mlp", input_example=xm, signature=infer_signature(
            xm, mlp(torch.from_numpy(xm)).detach().numpy()))
    forward_ms = _forward_ms(mlp, rng)
    from mlflow.artifacts import download_artifacts

    sk_dir = download_artifacts(artifact_uri=sk_uri)
    body = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32",
                                   "data": [0.1, 0.2, 0.3, 0.4]}]})
    mlp_body = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 64], "datatype": "FP32",
                                       "data": xm[0].tolist()}]})

    plain_port = _free_port()
    plain = subprocess.Popen([sys.executable, "-c", PLAIN_APP, sk_dir, str(plain_port)])
    try:
        plain_url = f"http://127.0.0.1:{plain_port}/v2/models/m/infer"
        _wait_http(f"http://127.0.0.1:{plain_port}/")

        raymlp.init(num_cpus=max(2, os.cpu_count() or 2))
        serve.start(port=_free_port())
        sk_service = serve.InferenceService(name="m", model=sk_uri, flavor="sklearn",
                                            resources=serve.Resources(cpus=0.5)).deploy()
        ray_url = f"{sk_service.url}/v2/models/m/infer"

        plain_p50, plain_p99 = latency(plain_url, body, args.requests)
        ray_p50, ray_p99 = latency(ray_url, body, args.requests)
        plain_c16 = load(plain_url, body, args.seconds)
        ray_c16 = load(ray_url, body, args.seconds)

        from raymlp._ray_compat import serve_client

        reps = serve_client().get_serve_details()["applications"]["m"]["deployments"][
            "predictor"]["replicas"]
        replica_rss = rss_mb(int(reps[0]["pid"]))
        plain_rss = rss_mb(plain.pid)
        sk_service.delete()

        res = serve.Resources(cpus=1.0)
        unbatched = serve.InferenceService(name="mlp", model=mlp_uri, resources=res).deploy()
        mlp_url = f"{unbatched.url}/v2/models/mlp/infer"
        latency(mlp_url, mlp_body, 100)
        no_batch = load(mlp_url, mlp_body, args.seconds)
        batched = serve.InferenceService(
            name="mlp", model=mlp_uri, resources=res,
            batching=serve.Batching(max_batch_size=16, max_wait_s=0.002)).deploy()
        latency(mlp_url, mlp_body, 100)
        batch = load(mlp_url, mlp_body, args.seconds)
        batched.delete()
    finally:
        plain.terminate()
        plain.wait(timeout=30)

    print(f"plain uvicorn : p50 {plain_p50:.2f} ms  p99 {plain_p99:.2f} ms  "
          f"c16 {plain_c16['rps']:.0f} req/s  rss {plain_rss:.0f} MB")
    print(f"raymlp.serve  : p50 {ray_p50:.2f} ms  p99 {ray_p99:.2f} ms  "
          f"c16 {ray_c16['rps']:.0f} req/s  replica rss {replica_rss:.0f} MB")
    print(f"forward (1 thread): 1 row {forward_ms[1]:.2f} ms, 16 rows {forward_ms[16]:.2f} ms")
    print(f"torch MLP c16 : unbatched {no_batch['rps']:.0f} req/s p95 {no_batch['p95_ms']:.1f} ms"
          f"; batched {batch['rps']:.0f} req/s p95 {batch['p95_ms']:.1f} ms")
    result = {
        "p50_overhead_ms": round(ray_p50 - plain_p50, 3),
        "p99_overhead_ms": round(ray_p99 - plain_p99, 3),
        "throughput_ratio_c16": round(ray_c16["rps"] / plain_c16["rps"], 3),
        "batching_gain": round(batch["rps"] / no_batch["rps"], 3),
        "batching_p95_ms": round(batch["p95_ms"], 2),
        "unbatched_p95_ms": round(no_batch["p95_ms"], 2),
        "replica_rss_mb_over_plain": round(replica_rss - plain_rss, 1),
        "mlp_forward_ms_1_row": round(forward_ms[1], 2),
        "mlp_forward_ms_16_rows": round(forward_ms[16], 2),
        "plain_p50_ms": round(plain_p50, 3),
        "raymlp_p50_ms": round(ray_p50, 3),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
