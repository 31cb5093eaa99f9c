"""raymlp.tracking against the local store and against a real `mlflow server` process."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from raymlp import _config, tracking
from raymlp.errors import ConfigError, JobError, SpecError, TrackingError
from tests.helpers import free_port


def test_runs_params_metrics_nested_runs_and_artifacts(raymlp_home, tmp_path):
    with tracking.start_run("parent", params={"opt": {"lr": 0.1, "name": "adam"}}) as parent:
        child = tracking.start_run("child", parent_run_id=parent.run_id, params={"k": 3})
        for step, loss in enumerate([0.9, 0.5, 0.3]):
            child.log_metrics({"loss": loss, "note": "skipped"}, step=step)
        (tmp_path / "report.txt").write_text("hello")
        child.log_artifact(tmp_path / "report.txt", "reports")
        child.end()
    run = tracking.get_run(parent.run_id)
    assert run.data.params == {"opt.lr": "0.1", "opt.name": "adam"}
    assert run.info.status == "FINISHED"
    kids = tracking.child_runs(parent.run_id)
    assert [k.info.run_id for k in kids] == [child.run_id]
    assert tracking.metric_history(child.run_id, "loss") == [(0, 0.9), (1, 0.5), (2, 0.3)]
    assert "note" not in tracking.get_run(child.run_id).data.metrics
    from mlflow import MlflowClient

    assert [a.path for a in MlflowClient().list_artifacts(child.run_id, "reports")] == \
        ["reports/report.txt"]
    # The local store keeps artifacts under the raymlp home, not the working directory.
    assert str(raymlp_home) in tracking.get_run(child.run_id).info.artifact_uri


def test_failed_block_marks_run_failed(raymlp_home):
    with pytest.raises(RuntimeError), tracking.start_run("boom") as run:
        raise RuntimeError("boom")
    assert tracking.get_run(run.run_id).info.status == "FAILED"


def _sklearn_model_roundtrip():
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).normal(size=(60, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    model = LogisticRegression().fit(x, y)
    h = tracking.data_hash(x, y)
    with tracking.start_run("sk", tags={"raymlp.data_hash": h}) as run:
        from mlflow.models import infer_signature

        uri = run.log_model(model, flavor="sklearn", signature=infer_signature(x, model.predict(x)))
    v1 = tracking.register_model(uri, "sk-model", alias="champion")
    v2 = tracking.register_model(uri, "sk-model", alias=["challenger"])
    assert int(v2.version) == int(v1.version) + 1
    loaded = tracking.load_model("models:/sk-model@champion")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert tracking.get_version("sk-model", alias="challenger").version == v2.version
    tracking.set_alias("sk-model", "champion", v2.version)
    assert tracking.get_version("sk-model", alias="champion").version == v2.version
    lineage = tracking.lineage("sk-model", v1.version)
    assert lineage["raymlp.source_run_id"] == run.run_id
    assert lineage["raymlp.data_hash"] == h
    native = tracking.load_model(f"models:/sk-model/{v1.version}", flavor="sklearn")
    np.testing.assert_array_equal(native.predict(x), model.predict(x))
    with pytest.raises(TrackingError, match="sk-model@nobody"):
        tracking.get_version("sk-model", alias="nobody")


def test_model_registry_aliases_and_lineage_on_local_store(raymlp_home):
    _sklearn_model_roundtrip()


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` process: SQLite backend, local artifact root, served artifacts."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("mlflow server exited at start")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not become healthy in 120 s")
    yield url, tmp_path / "server-artifacts"
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_tracking_and_a_training_job_against_a_real_mlflow_server(ray_session, mlflow_server,
                                                                   examples_path):
    from raymlp import train

    url, artifacts = mlflow_server
    previous = _config.get().tracking_uri
    _config.configure(tracking_uri=url)
    try:
        _sklearn_model_roundtrip()
        import train_digits

        result = train.TrainJob(
            loop=train_digits.digits_loop, name="digits-server", scaling=train.Scaling(workers=2),
            config={"lr": 3e-3, "hidden": 32, "batch_size": 64, "epochs": 2},
        ).run()
        run = tracking.get_run(result.run_id)
        assert run.info.status == "FINISHED"
        assert len(tracking.metric_history(result.run_id, "val_accuracy")) == 2
        assert run.data.params["hidden"] == "32"
        version = result.register("digits-server", alias="champion")
        x_val = train_digits.load_digits_split()[1]
        served = tracking.load_model("models:/digits-server@champion")
        assert np.asarray(served.predict(x_val[:8])).shape == (8, 10)
        assert version.run_id == result.run_id
        # The artifacts really went through the server into its artifact store.
        assert any(p.name == "MLmodel" for p in artifacts.rglob("MLmodel"))
    finally:
        _config.configure(tracking_uri=previous)


def test_unreachable_tracking_server_gives_a_tracking_error(raymlp_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    previous = _config.get().tracking_uri
    _config.configure(tracking_uri=f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(TrackingError, match="cannot start a run"):
            tracking.start_run("nowhere")
    finally:
        _config.configure(tracking_uri=previous)


def test_data_hash_is_stable_and_sensitive(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert tracking.data_hash(a) == tracking.data_hash(a.copy())
    assert tracking.data_hash(a) != tracking.data_hash(a.reshape(4, 3))
    assert tracking.data_hash(a) != tracking.data_hash(a.astype(np.float64))
    b = a.copy()
    b[0, 0] = 1
    assert tracking.data_hash(a) != tracking.data_hash(b)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.csv").write_text("1,2\n")
    h = tracking.data_hash(tmp_path / "d")
    (tmp_path / "d" / "x.csv").write_text("1,3\n")
    assert tracking.data_hash(tmp_path / "d") != h


@pytest.mark.parametrize("err", [
    SpecError("bad", field="Scaling.workers", value=0),
    JobError("failed", cause="ValueError: x"),
    ConfigError("nope"),
    TrackingError("gone"),
])
def test_errors_pickle_with_their_fields(err):
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert str(back) == str(err)
    assert back.__dict__ == err.__dict__


def test_configuration_resolution_order(monkeypatch, tmp_path):
    saved = dict(_config._overrides)
    try:
        _config.reset()
        monkeypatch.setenv("RAYMLP_HOME", str(tmp_path))
        monkeypatch.delenv("RAYMLP_TRACKING_URI", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert _config.get().tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
        monkeypatch.setenv("RAYMLP_TRACKING_URI", "http://env:5000")
        _config.reset()
        assert _config.get().tracking_uri == "http://env:5000"
        assert _config.configure(tracking_uri="http://arg:5000").tracking_uri == "http://arg:5000"
        monkeypatch.setenv("RAYMLP_RAY_ADDRESS", "10.0.0.1:6379")
        _config.reset()
        assert _config.get().ray_address == "10.0.0.1:6379"
        assert _config.get().env()["RAYMLP_RAY_ADDRESS"] == "10.0.0.1:6379"
        with pytest.raises(ConfigError, match="unknown configuration field"):
            _config.configure(tracking="x")
        with pytest.raises(ConfigError, match="Config.experiment"):
            _config.configure(experiment=" ")
    finally:
        _config.reset()
        _config._overrides.update(saved)
