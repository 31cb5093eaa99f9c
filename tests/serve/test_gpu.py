"""GPU serving: torch models on a replica holding half a GPU compute on it, in both formats
MLflow saves them in (``pt2``: a torch.export program moved to the GPU; ``pickle``), and answer
what they answer on the CPU. Run with `-m gpu` on a machine with an NVIDIA GPU."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from tests.helpers import free_port, infer_body
from tests.serve.test_torch import log_torch

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]


def test_fractional_gpu_replica_serves_torch_models_on_cuda(ray_session):
    import torch

    from raymlp import serve, tracking

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 3)).eval()
    x = np.random.RandomState(0).rand(32, 16).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    pt2 = log_torch(model, x[:8], "pt2")
    with tracking.start_run("gpu-serve") as run:  # raymlp's own logging: a pickled model
        pickled = run.log_model(model, flavor="torch", input_example=x[:8])
    serve.start(port=free_port())
    service = serve.InferenceService(name="gpu-svc", model=pt2,
                                     resources=serve.Resources(cpus=1, gpus=0.5)).deploy()
    try:
        for expected_format in ("pt2", "pickle"):
            stats = requests.get(f"{service.url}/raymlp/stats", timeout=30).json()
            variant = stats["variants"][-1]
            assert variant["format"] == expected_format, stats
            assert variant["device"].startswith("cuda") and variant["fallback"] is None, stats
            r = requests.post(f"{service.url}/v2/models/gpu-svc/infer", json=infer_body(x),
                              timeout=60)
            assert r.status_code == 200, r.text
            assert r.headers["x-raymlp-variant"] == variant["name"]
            got = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32)
            np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-4, atol=1e-5)
            if expected_format == "pt2":
                service.canary(pickled, percent=100)
    finally:
        service.delete()
