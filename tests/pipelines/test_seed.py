"""The seed's pipeline end to end (train with raymlp.train, serve with raymlp.serve), run once
for the module; a raised threshold reuses the cache and skips the deploy branch; local mode
gives the same outputs; lineage walks the registered model back to its data in MLflow."""

from __future__ import annotations

import pytest

from raymlp import pipelines, tracking
from tests.helpers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "seed-pipeline-test"


@pytest.fixture(scope="module")
def seed(ray_session, examples_path):
    import seed_pipeline

    return seed_pipeline.seed


@pytest.fixture(scope="module")
def params():
    return {"epochs": 10, "model_name": MODEL, "keep_service": False, "serve_port": free_port()}


@pytest.fixture(scope="module")
def first(seed, params):
    return seed.run(params, progress=False)


def test_seed_deploys_when_accuracy_clears_threshold(first):
    assert first.status == "SUCCEEDED", first.error
    steps = first.steps
    assert [steps[k].status for k in ("preprocess", "train_model", "evaluate_model",
                                      "deploy_model", "record_outcome")] == ["SUCCEEDED"] * 5
    accuracy = steps["evaluate_model"].outputs["test_accuracy"]
    assert accuracy > 0.85 and first.outputs == {"test_accuracy": accuracy}
    # the service answered with the evaluated model's predictions
    assert steps["deploy_model"].outputs["Output"] == steps["evaluate_model"].outputs["predictions"]
    assert steps["record_outcome"].outputs["Output"] == "SUCCEEDED"
    assert steps["evaluate_model"].metrics == {"test_accuracy": accuracy}
    assert steps["preprocess"].artifacts["data"]["digest"]


def test_raised_threshold_skips_deploy_and_reuses_cache(seed, params, first):
    second = seed.run({**params, "threshold": 0.9999}, progress=False)
    assert second.status == "SUCCEEDED"
    assert second.steps["deploy_model"].status == "SKIPPED"
    assert {k: second.steps[k].status for k in ("preprocess", "train_model", "evaluate_model")} \
        == dict.fromkeys(("preprocess", "train_model", "evaluate_model"), "CACHED")
    assert second.steps["record_outcome"].status == "SUCCEEDED"
    assert second.outputs == first.outputs


def test_local_mode_gives_the_same_outputs(seed, params, first):
    local = seed.run({**params, "threshold": 0.9999}, mode="local", cache=False, progress=False)
    assert local.status == "SUCCEEDED", local.error
    for step in ("preprocess", "evaluate_model"):
        assert local.steps[step].status == "SUCCEEDED"
        assert local.steps[step].outputs == first.steps[step].outputs
    assert local.steps["preprocess"].artifacts["data"]["digest"] == \
        first.steps["preprocess"].artifacts["data"]["digest"]


def test_lineage_from_registered_model_to_data(first):
    out = pipelines.lineage(f"models:/{MODEL}@champion")
    assert out["pipeline"]["run_id"] == first.id
    assert out["pipeline"]["mlflow_run_id"] == first.mlflow_run_id
    assert out["pipeline"]["params"]["epochs"] == "10"
    assert [s["step"] for s in out["steps"]] == ["deploy_model", "preprocess", "train_model"]
    data_digest = first.steps["preprocess"].artifacts["data"]["digest"]
    assert out["data"] == {"preprocess.data": data_digest}
    assert out["steps"][1]["params"]["test_size"] == "0.2"
    # the same facts, straight from MLflow: the version's tags and the step runs
    version = tracking.get_version(MODEL, alias="champion")
    assert version.tags["raymlp.dataset.data"] == data_digest
    assert version.tags["raymlp.pipeline.run_id"] == first.id
    children = tracking.child_runs(first.mlflow_run_id)
    steps = {r.data.tags["raymlp.pipeline.step"]: r for r in children
             if "raymlp.pipeline.step" in r.data.tags}
    # the training job's own run is nested under the pipeline run, with the data as its input
    job = next(r for r in children if "raymlp.pipeline.step" not in r.data.tags)
    assert [tracking.dataset_digest(d.dataset) for d in job.inputs.dataset_inputs] == \
        [data_digest]
    assert steps["preprocess"].data.tags["raymlp.artifact.data.digest"] == data_digest
    assert steps["evaluate_model"].data.metrics["test_accuracy"] == \
        first.outputs["test_accuracy"]
    assert steps["train_model"].data.tags["raymlp.pipeline.cache_hit"] == "false"
