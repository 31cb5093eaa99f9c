"""Torch models in both formats MLflow saves them in, served on the CPU: ``pt2`` (a
torch.export program, MLflow 3's default when given an input example) and ``pickle``; the
answers are the model's own and /raymlp/stats says the device and the format."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from tests.helpers import free_port, infer_body

pytestmark = pytest.mark.timeout(300)

NAME = "torch-svc"


def log_torch(model, x, serialization_format: str) -> str:
    """Log ``model`` with MLflow's own torch flavor in ``serialization_format``; its URI."""
    import mlflow

    from raymlp import tracking

    with tracking.start_run(f"torch-{serialization_format}") as run:
        with mlflow.start_run(run_id=run.run_id):
            info = mlflow.pytorch.log_model(model, name="model", input_example=x,
                                            serialization_format=serialization_format)
    return info.model_uri


@pytest.fixture(scope="module")
def models(ray_session):
    import torch

    torch.manual_seed(0)
    first = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 3)).eval()
    second = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Tanh(),
                                 torch.nn.Linear(8, 3)).eval()
    x = np.random.RandomState(0).rand(8, 16).astype(np.float32)
    return {"x": x, "first": first, "second": second,
            "pt2": log_torch(first, x, "pt2"), "pickle": log_torch(second, x, "pickle")}


def _predict(model, x):
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def _answer(url, x):
    r = requests.post(f"{url}/v2/models/{NAME}/infer", json=infer_body(x), timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["datatype"] == "FP32" and out["shape"] == [len(x), 3]
    return np.asarray(out["data"], dtype=np.float32).reshape(len(x), 3)


def test_pt2_and_pickled_torch_models_answer_what_the_model_answers(models):
    from mlflow.models import Model

    from raymlp import serve, tracking

    local = tracking.download_model(models["pt2"])
    assert (local / "data" / "model.pt2").is_file()  # MLflow really saved a torch.export program
    assert "pytorch" in Model.load(str(local)).flavors

    serve.start(port=free_port())
    service = serve.InferenceService(name=NAME, model=models["pt2"],
                                     resources=serve.Resources(cpus=0.5)).deploy()
    try:
        x = np.random.RandomState(1).rand(5, 16).astype(np.float32)  # another batch size
        np.testing.assert_allclose(_answer(service.url, x), _predict(models["first"], x),
                                   rtol=1e-5, atol=1e-6)
        stats = requests.get(f"{service.url}/raymlp/stats", timeout=30).json()
        (variant,) = stats["variants"]
        assert (variant["flavor"], variant["format"], variant["device"], variant["fallback"]) \
            == ("torch", "pt2", "cpu", None)
        meta = requests.get(f"{service.url}/v2/models/{NAME}", timeout=30).json()
        assert meta["platform"] == "mlflow-pytorch"

        st = service.canary(models["pickle"], percent=100)
        assert st.canary.percent == 100
        np.testing.assert_allclose(_answer(service.url, x), _predict(models["second"], x),
                                   rtol=1e-5, atol=1e-6)
        stats = requests.get(f"{service.url}/raymlp/stats", timeout=30).json()
        formats = {v["name"]: (v["format"], v["device"]) for v in stats["variants"]}
        assert formats == {"stable": ("pt2", "cpu"), "canary": ("pickle", "cpu")}
    finally:
        service.delete()
