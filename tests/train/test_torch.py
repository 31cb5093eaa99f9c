"""PyTorch on Ray Train through raymlp: accuracy, gradient averaging, MLflow records, faults."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from raymlp import tracking, train

pytestmark = [pytest.mark.slow]


def test_ddp_digits_reaches_accuracy_and_is_fully_tracked(digits_job, examples_path):
    import torch
    import train_digits

    job, result = digits_job  # 2 workers, 12 epochs, checkpoints kept by val_accuracy

    # 1. accuracy and per-epoch history
    assert result.metrics["val_accuracy"] >= 0.90
    assert [round(h["epoch"]) for h in result.history] == list(range(12))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]

    # 5. the MLflow run: params, per-epoch metrics, checkpoints, model
    run = tracking.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.003"
    assert run.data.params["raymlp.backend"] == "gloo"
    assert run.data.params["raymlp.workers"] == "2"
    steps = [step for step, _ in tracking.metric_history(result.run_id, "val_accuracy")]
    assert sorted(set(steps)) == list(range(12))

    # MLflow 3 entities: the model is a LoggedModel of this run; the data a dataset input.
    logged = tracking.logged_model(result.run_id)
    assert result.model_uri == f"models:/{logged.model_id}"
    assert logged.source_run_id == result.run_id
    (data,) = [d.dataset for d in run.inputs.dataset_inputs]
    assert data.name == "digits"
    assert job.data_hash.startswith(data.digest)  # MLflow keeps 36 characters at most
    assert json.loads(data.profile)["raymlp.digest"] == job.data_hash
    from mlflow import MlflowClient

    arts = [a.path for a in MlflowClient().list_artifacts(result.run_id, "checkpoints")]
    assert len(arts) == 2, arts  # keep=2
    assert result.best_checkpoint is not None

    # The logged model predicts what the trained weights predict.
    x_val = train_digits.load_digits_split()[1]
    best_state = torch.load(Path(result.checkpoint.path) / "state.pkl", weights_only=False)
    trained = train_digits.mlp(64)
    trained.load_state_dict(best_state["model"])
    with torch.no_grad():
        expected = trained(torch.from_numpy(x_val)).numpy()
    native = result.load_model()
    with torch.no_grad():
        np.testing.assert_allclose(native(torch.from_numpy(x_val)).numpy(), expected, atol=1e-5)
    pyfunc = result.load_model("pyfunc")
    np.testing.assert_allclose(np.asarray(pyfunc.predict(x_val)), expected, atol=1e-5)
    assert pyfunc.metadata.get_input_schema().input_types()[0].name == "float32"
    by_run = tracking.load_model(f"runs:/{result.run_id}/model")
    np.testing.assert_allclose(np.asarray(by_run.predict(x_val)), expected, atol=1e-5)

    # register() creates a version reachable by alias, with lineage
    version = result.register("digits-test", alias="champion")
    by_alias = tracking.load_model("models:/digits-test@champion")
    np.testing.assert_allclose(np.asarray(by_alias.predict(x_val)), expected, atol=1e-5)
    lineage = tracking.lineage("digits-test", version.version)
    assert lineage["raymlp.source_run_id"] == result.run_id
    assert lineage["raymlp.data_hash"] == job.data_hash


def _one_step_loop(ctx):
    """One synchronous DDP step on this rank's shard of a fixed global batch; saves params."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    model = ctx.prepare_model(model)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 8, generator=g)
    y = torch.randint(0, 3, (32,), generator=g)
    xs, ys = ctx.shard(x, y)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(xs), ys).backward()
    opt.step()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    np.save(Path(ctx.config["out"]) / f"rank{ctx.rank}.npy", flat)
    ctx.report({"done": 1})


def test_one_step_averages_gradients_like_a_single_process(ray_session, tmp_path):
    import torch

    train.TrainJob(loop=_one_step_loop, framework="torch", name="grad-avg",
                   scaling=train.Scaling(workers=2), config={"out": str(tmp_path)}).run()

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 8, generator=g)
    y = torch.randint(0, 3, (32,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    single = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()

    rank0, rank1 = np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")
    np.testing.assert_array_equal(rank0, rank1)
    np.testing.assert_allclose(rank0, single, atol=1e-6, rtol=0)
    # The step really moved the weights (a no-op step would also make ranks equal).
    torch.manual_seed(0)
    init = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    before = torch.cat([p.detach().reshape(-1) for p in init.parameters()]).numpy()
    assert np.abs(rank0 - before).max() > 1e-3


def _killed_loop(ctx):
    """Counts epochs; on the first attempt rank 1 SIGKILLs its own process at epoch 5."""
    import time

    import torch

    torch.manual_seed(0)
    model = ctx.prepare_model(torch.nn.Linear(2, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rest = ctx.restore(model=model, optimizer=opt)  # None on a fresh start
    saved = ctx.restore()  # the whole saved state, as before
    restored = 1.0
    if saved is not None:
        # The model and the optimizer now hold exactly what the last checkpoint saved.
        weights = ctx.unwrap(model).state_dict()
        restored = float(set(saved["model"]) == set(weights)
                         and all(torch.equal(weights[k], v) for k, v in saved["model"].items())
                         and len(opt.state_dict()["state"]) == len(saved["optimizer"]["state"]) > 0
                         and rest == {"seen": saved["seen"]})
    state = rest or {"seen": []}
    resumed_from = ctx.start_epoch
    marker = Path(ctx.config["marker"])
    x = torch.ones(4, 2)
    for epoch in ctx.epochs(ctx.config["epochs"]):
        time.sleep(0.2)
        if epoch == 5 and ctx.rank == 1 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
        state["seen"].append(epoch)
        ctx.report({"value": float(epoch) ** 0.5, "resumed_from": resumed_from,
                    "restored": restored},
                   checkpoint={"model": model, "optimizer": opt, **state})


def test_killed_worker_resumes_from_last_checkpoint(ray_session, tmp_path):
    every = 2
    job = train.TrainJob(loop=_killed_loop, framework="torch", name="killed",
                         scaling=train.Scaling(workers=2), max_failures=1,
                         config={"epochs": 8, "marker": str(tmp_path / "killed")},
                         checkpointing=train.Checkpointing(every=every, keep=1))
    result = job.run()

    assert (tmp_path / "killed").exists(), "the worker was never killed"
    assert [round(h["epoch"]) for h in result.history] == list(range(8))
    # The restart resumed after the last checkpoint taken before the kill (epoch 3), not
    # from scratch: later epochs say so, earlier ones came from the first attempt.
    resumed = [round(h["resumed_from"]) for h in result.history]
    assert resumed == [0] * 4 + [4] * 4, resumed
    # ctx.restore(model=, optimizer=) loaded the checkpoint's weights and optimizer state.
    assert [h["restored"] for h in result.history] == [1.0] * 8
    # The run's raw metric history repeats at most one checkpoint interval.
    steps = [step for step, _ in tracking.metric_history(result.run_id, "value")]
    assert len(steps) - len(set(steps)) <= every, steps
    assert sorted(set(steps)) == list(range(8))
    # The state carried through the checkpoint lists every epoch exactly once; the model is
    # saved unwrapped (its own parameter names, no DDP prefix).
    import torch

    final = torch.load(Path(result.checkpoint.path) / "state.pkl", weights_only=False)
    assert final["seen"] == list(range(8))
    assert set(final["model"]) == {"weight", "bias"}


def _slow_loop(ctx):
    import time

    for _ in ctx.epochs(1000):
        time.sleep(0.5)
        ctx.report({"x": 1.0})


def test_job_past_its_timeout_is_stopped_and_raises_timeout_error(ray_session):
    import ray

    from raymlp.errors import TimeoutError
    from tests.helpers import wait_for

    total = ray.cluster_resources()["CPU"]
    started = time.monotonic()
    with pytest.raises(TimeoutError) as err:
        train.TrainJob(loop=_slow_loop, name="slow", scaling=train.Scaling(workers=2)).run(
            timeout_s=8)
    assert 8 <= time.monotonic() - started < 40
    assert err.value.timeout_s == 8
    assert "slow" in err.value.what
    runs = tracking.client().search_runs(
        [tracking.experiment_id()], filter_string="tags.`raymlp.timed_out` = 'true'",
        order_by=["attributes.start_time DESC"], max_results=1)
    assert runs and runs[0].info.run_name == "slow"
    assert runs[0].info.status == "KILLED"
    # The workers are gone and their CPUs free again.
    wait_for("the stopped job's workers to release their CPUs",
             lambda: ray.available_resources().get("CPU", 0) >= total, timeout=30)


def _failing_loop(ctx):
    for epoch in ctx.epochs(3):
        if epoch == 1:
            raise ValueError(f"bad batch at epoch {epoch}")
        ctx.report({"x": 1.0})


def test_failing_loop_gives_job_error_with_cause_and_failed_run(ray_session):
    from raymlp.errors import JobError

    with pytest.raises(JobError) as err:
        train.TrainJob(loop=_failing_loop, name="failing", scaling=train.Scaling(workers=2)).run()
    assert "ValueError: bad batch at epoch 1" in err.value.cause
    run = tracking.get_run(err.value.run_id)
    assert run.info.status == "FAILED"
    assert tracking.metric_history(err.value.run_id, "x") == [(0, 1.0)]
