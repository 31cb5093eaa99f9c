"""MLflow 3's own entities: LoggedModels linked to their run, dataset inputs, experiment kind,
the flavor registry, and models saved in training workers (real MLflow store, real Ray)."""

from __future__ import annotations

import uuid

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus

from raymlp import tracking
from raymlp.errors import SpecError, TrackingError


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sk_model():
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(1).normal(size=(80, 4))
    y = (x[:, 0] - x[:, 2] > 0).astype(int)
    return LogisticRegression().fit(x, y), x, y


def test_logged_model_is_linked_to_its_run_and_loads_by_every_uri(raymlp_home, sk_model):
    model, x, y = sk_model
    digest = tracking.data_hash(x, y)
    with tracking.start_run("entities") as run:
        run.log_metrics({"accuracy": 0.8}, step=0)
        run.log_metrics({"accuracy": 0.9}, step=1)
        run.log_dataset(name="train", digest=digest, source=str(raymlp_home / "train.csv"))
        uri = run.log_model(model, flavor="sklearn", input_example=x[:4])
    model_id = uri.removeprefix("models:/")
    assert uri.startswith("models:/m-")

    exp_id = tracking.get_run(run.run_id).info.experiment_id
    found = [m for m in mlflow.search_logged_models(experiment_ids=[exp_id], output_format="list")
             if m.source_run_id == run.run_id]
    assert [m.model_id for m in found] == [model_id]
    logged = MlflowClient().get_logged_model(model_id)
    assert logged.name == "model"
    assert logged.status == LoggedModelStatus.READY
    assert logged.params == {}
    # The run's latest metrics are linked to the model, the run's history is unchanged.
    assert [(m.key, m.value, m.step) for m in logged.metrics] == [("accuracy", 0.9, 1)]
    assert tracking.metric_history(run.run_id, "accuracy") == [(0, 0.8), (1, 0.9)]
    outputs = tracking.get_run(run.run_id).outputs.model_outputs
    assert [(o.model_id, o.step) for o in outputs] == [(model_id, 1)]
    assert tracking.logged_model(run.run_id).model_id == model_id

    expected = model.predict(x[:5])
    for ref in (uri, f"runs:/{run.run_id}/model"):
        np.testing.assert_array_equal(tracking.load_model(ref).predict(x[:5]), expected)
    native = tracking.load_model(uri, flavor="sklearn")
    np.testing.assert_array_equal(native.predict(x[:5]), expected)

    name = _unique("entities")
    version = tracking.register_model(f"runs:/{run.run_id}/model", name, alias="champion")
    assert version.run_id == run.run_id
    assert version.source == uri
    np.testing.assert_array_equal(
        tracking.load_model(f"models:/{name}@champion").predict(x[:5]), expected)
    lineage = tracking.lineage(name, version.version)
    assert lineage["raymlp.source_run_id"] == run.run_id
    assert lineage["raymlp.dataset.train"] == digest
    assert lineage["raymlp.data_hash"] == digest

    meta = tracking.model_metadata(uri)
    assert meta.metadata["raymlp.flavor"] == "sklearn"
    assert meta.model_id == model_id and meta.run_id == run.run_id
    local = tracking.download_model(f"models:/{name}@champion", raymlp_home / _unique("dl"))
    assert (local / "MLmodel").is_file()


def test_metrics_logged_with_a_model_id_are_linked_to_it(raymlp_home, sk_model):
    model, _x, _ = sk_model
    with tracking.start_run("linked") as run:
        uri = run.log_model(model, flavor="sklearn")
        model_id = uri.removeprefix("models:/")
        run.log_metrics({"holdout_accuracy": 0.75}, step=3, model_id=model_id)
    metrics = MlflowClient().get_logged_model(model_id).metrics
    assert [(m.key, m.value, m.step) for m in metrics] == [("holdout_accuracy", 0.75, 3)]
    assert tracking.metric_history(run.run_id, "holdout_accuracy") == [(3, 0.75)]


def test_dataset_input_carries_name_digest_source_and_context(raymlp_home):
    digest = tracking.data_hash(np.arange(10))
    with tracking.start_run("data") as run:
        run.log_dataset(name="train", digest=digest, source="s3://bucket/digits/train.parquet")
        run.log_dataset(name="holdout", digest="abc123", context="validation")
    inputs = {d.dataset.name: d for d in tracking.get_run(run.run_id).inputs.dataset_inputs}
    assert sorted(inputs) == ["holdout", "train"]
    train = inputs["train"]
    # MLflow keeps 36 characters of a digest at most: the full one is in the profile.
    assert train.dataset.digest == digest[:32]
    assert tracking.dataset_digest(train.dataset) == digest
    assert train.dataset.source_type == "s3"
    assert "s3://bucket/digits/train.parquet" in train.dataset.source
    assert {(t.key, t.value) for t in train.tags} == {("mlflow.data.context", "training")}
    assert inputs["holdout"].dataset.digest == "abc123"
    assert inputs["holdout"].dataset.source_type == "code"
    assert {(t.key, t.value) for t in inputs["holdout"].tags} == \
        {("mlflow.data.context", "validation")}
    with pytest.raises(SpecError, match="log_dataset.digest"):
        run.log_dataset(name="train", digest="")


def test_experiments_open_in_the_classic_model_view(raymlp_home):
    mlc = MlflowClient()
    fresh = _unique("kind-new")
    assert mlc.get_experiment(tracking.experiment_id(fresh)).tags["mlflow.experimentKind"] == \
        "custom_model_development"
    # An experiment created elsewhere, which MLflow's UI guessed to be GenAI, is marked ...
    guessed = mlc.create_experiment(_unique("kind-guessed"),
                                    tags={"mlflow.experimentKind": "genai_development_inferred"})
    tracking.experiment_id(mlc.get_experiment(guessed).name)
    assert mlc.get_experiment(guessed).tags["mlflow.experimentKind"] == "custom_model_development"
    # ... one whose kind someone chose is left alone.
    chosen = mlc.create_experiment(_unique("kind-chosen"),
                                   tags={"mlflow.experimentKind": "genai_development"})
    tracking.experiment_id(mlc.get_experiment(chosen).name)
    assert mlc.get_experiment(chosen).tags["mlflow.experimentKind"] == "genai_development"


def test_torch_model_saved_by_save_model_is_pickled_and_moves_between_devices(raymlp_home,
                                                                              tmp_path):
    import torch
    import torch.distributed as dist

    from tests.helpers import free_port

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0,
                            world_size=1)
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(net)
        x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
        assert tracking.save_model(ddp, tmp_path / "m", flavor="pytorch", input_example=x) == \
            "torch"
    finally:
        dist.destroy_process_group()
    meta = tracking.model_metadata(tmp_path / "m")
    assert meta.metadata == {"raymlp.flavor": "torch", "raymlp.serialization_format": "pickle"}
    assert (tmp_path / "m" / "data" / "model.pth").is_file()
    assert not list((tmp_path / "m").rglob("*.pt2"))
    assert meta.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 4)
    assert tracking.native_flavor(meta.flavors) == "torch"

    loaded = tracking.load_model(str(tmp_path / "m"), flavor="torch")
    assert not isinstance(loaded, torch.nn.parallel.DistributedDataParallel)
    moved = loaded.to("cpu").eval()  # a pt2 program raises on eval()
    with torch.no_grad():
        np.testing.assert_allclose(moved(torch.from_numpy(x)).numpy(),
                                   net(torch.from_numpy(x)).detach().numpy(), rtol=1e-6)
    # Logged from the directory, it loads the same way from the store.
    with tracking.start_run("torch-dir") as run:
        uri = run.log_model_dir(tmp_path / "m", step=0)
    again = tracking.load_model(uri, flavor="torch").to("cpu").eval()
    assert isinstance(again, torch.nn.Sequential)
    assert tracking.model_metadata(f"runs:/{run.run_id}/model").model_id == \
        uri.removeprefix("models:/")


def test_log_model_dir_rejects_a_directory_without_a_model(raymlp_home, tmp_path):
    with tracking.start_run("no-model") as run:
        with pytest.raises(TrackingError, match="no MLflow model"):
            run.log_model_dir(tmp_path)


@pytest.mark.parametrize("name, raymlp_name, mlflow_name", [
    ("torch", "torch", "pytorch"), ("pytorch", "torch", "pytorch"),
    ("tensorflow", "tensorflow", "tensorflow"), ("keras", "tensorflow", "tensorflow"),
    ("xgboost", "xgboost", "xgboost"), ("sklearn", "sklearn", "sklearn"),
    ("pyfunc", "pyfunc", "python_function"),
])
def test_flavor_registry_names_and_aliases(name, raymlp_name, mlflow_name):
    fl = tracking.flavor(name)
    assert (fl.name, fl.mlflow_name) == (raymlp_name, mlflow_name)
    assert fl.name in tracking.FLAVORS
    assert fl.requirements()[0].startswith("mlflow==")


def test_flavor_registry_modules_and_native_choice():
    assert tracking.FLAVORS == ("torch", "tensorflow", "xgboost", "sklearn", "pyfunc")
    assert tracking.flavor("torch").module() is __import__("mlflow.pytorch").pytorch
    assert tracking.flavor("pyfunc").module() is mlflow.pyfunc
    assert tracking.native_flavor(["python_function", "pytorch"]) == "torch"
    assert tracking.native_flavor(["xgboost", "python_function"]) == "xgboost"
    assert tracking.native_flavor(["python_function", "sklearn"]) == "sklearn"
    assert tracking.native_flavor(["tensorflow", "python_function"]) == "pyfunc"
    assert tracking.native_flavor(["python_function"]) == "pyfunc"


@pytest.mark.parametrize("bad", ["onnx", "Torch", "", True, None, ["torch"]])
def test_unknown_flavor_is_a_spec_error_listing_the_allowed_names(bad):
    with pytest.raises(SpecError) as info:
        tracking.flavor(bad, field="TrainJob.flavor")
    err = info.value
    assert err.field == "TrainJob.flavor"
    assert err.value == bad
    for allowed in tracking.FLAVORS:
        assert repr(allowed) in err.allowed
    assert "'pytorch'" in err.allowed and "'keras'" in err.allowed


@pytest.mark.slow
def test_a_training_job_logs_a_logged_model_and_its_dataset_input(ray_session, examples_path):
    """Acceptance 6: after a TrainJob, MLflow's client finds the model as a LoggedModel whose
    source run is the job's run, the run's dataset inputs carry the training data's digest,
    and the registered version loads by alias."""
    import train_digits

    from raymlp import train

    x_train, x_val, y_train, _ = train_digits.load_digits_split()
    digest = tracking.data_hash(x_train, y_train)
    result = train.TrainJob(
        loop=train_digits.digits_loop, name="digits-entities", scaling=train.Scaling(workers=2),
        config={"lr": 3e-3, "hidden": 32, "batch_size": 64, "epochs": 2},
        data_hash=digest, data_source="sklearn.datasets.load_digits",
    ).run()
    run = tracking.get_run(result.run_id)
    mlc = MlflowClient()
    models = [m for m in mlc.search_logged_models([run.info.experiment_id])
              if m.source_run_id == result.run_id]
    assert len(models) == 1
    assert result.model_uri == f"models:/{models[0].model_id}"
    assert {m.key for m in models[0].metrics} >= {"val_accuracy", "train_loss"}
    assert [o.model_id for o in run.outputs.model_outputs] == [models[0].model_id]

    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "train"
    assert tracking.dataset_digest(dataset_input.dataset) == digest
    assert {(t.key, t.value) for t in dataset_input.tags} == {("mlflow.data.context", "training")}

    name = _unique("digits-entities")
    version = result.register(name, alias="champion")
    assert version.run_id == result.run_id
    assert tracking.lineage(name, version.version)["raymlp.dataset.train"] == digest
    served = tracking.load_model(f"models:/{name}@champion")
    assert np.asarray(served.predict(x_val[:8])).shape == (8, 10)
    torch_model = tracking.load_model(f"runs:/{result.run_id}/model", flavor="torch")
    assert tracking.model_metadata(result.model_uri).metadata["raymlp.serialization_format"] == \
        "pickle"
    assert torch_model.to("cpu").eval() is torch_model
