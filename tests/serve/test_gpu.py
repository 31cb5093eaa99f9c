"""GPU serving: a torch model on a replica holding half a GPU computes on it and answers what
it answers on the CPU. Run with `-m gpu` on a machine with an NVIDIA GPU."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from tests.helpers import free_port

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]


def test_fractional_gpu_replica_serves_a_torch_model_on_cuda(ray_session):
    import torch
    from mlflow.models import infer_signature

    from raymlp import serve, tracking

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 3)).eval()
    x = np.random.RandomState(0).rand(32, 16).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    with tracking.start_run("gpu-serve") as run:
        uri = run.log_model(model, flavor="torch", signature=infer_signature(x, want))
    serve.start(port=free_port())
    st = serve.InferenceService(name="gpu-svc", model=uri,
                                resources=serve.Resources(num_cpus=1, num_gpus=0.5)).deploy()
    try:
        stats = requests.get(f"{st.url}/raymlp/stats", timeout=30).json()
        assert stats["variants"][0]["device"].startswith("cuda"), stats
        r = requests.post(f"{st.url}/v2/models/gpu-svc/infer", timeout=60, json={"inputs": [
            {"name": "input-0", "shape": list(x.shape), "datatype": "FP32",
             "data": x.reshape(-1).tolist()}]})
        assert r.status_code == 200, r.text
        got = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(want.shape)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    finally:
        serve.delete("gpu-svc")
