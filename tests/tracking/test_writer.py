"""The process's tracking writer and BufferedRun, against the real local MLflow store.

Store calls are counted by wrapping the real client's methods (they still write)."""

from __future__ import annotations

import collections
import threading
import time

import pytest

from raymlp import tracking

CALLS = ("create_run", "log_batch", "set_terminated")


@pytest.fixture
def calls(raymlp_home, monkeypatch):
    from mlflow import MlflowClient

    counted: collections.Counter = collections.Counter()
    for name in CALLS:
        real = getattr(MlflowClient, name)

        def counting(self, *args, _real=real, _name=name, **kwargs):
            counted[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(MlflowClient, name, counting)
    return counted


def _nested(name: str, created: list | None = None) -> tuple[tracking.Run, tracking.BufferedRun]:
    parent = tracking.start_run("writer-parent")
    run = tracking.BufferedRun(name, experiment_id=tracking.experiment_id(),
                               parent_run_id=parent.run_id, params={"lr": 0.1, "opt": {"m": 2}},
                               tags={"kind": "trial"},
                               on_create=created.append if created is not None else None)
    return parent, run


def test_a_short_run_costs_three_store_calls_and_keeps_everything(calls):
    created: list[str] = []
    parent, run = _nested("short", created)
    calls.clear()
    for step in range(1, 4):
        run.log_metrics({"loss": 1.0 / step, "note": "not a number"}, step=step)
        run.flush_soon(delay_s=5.0)
    run.set_tags({"status": "completed"})
    run.end("KILLED")
    tracking.writer().submit(run.flush)
    assert tracking.writer().flush(30)
    assert dict(calls) == {"create_run": 1, "log_batch": 1, "set_terminated": 1}
    assert created == [run.run_id]
    got = tracking.get_run(run.run_id)
    assert got.info.status == "KILLED" and got.info.run_name == "short"
    assert got.data.params == {"lr": "0.1", "opt.m": "2"}
    assert got.data.tags["kind"] == "trial" and got.data.tags["status"] == "completed"
    assert got.data.tags["mlflow.parentRunId"] == parent.run_id
    assert tracking.metric_history(run.run_id, "loss") == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    assert [r.info.run_id for r in tracking.child_runs(parent.run_id)] == [run.run_id]


def test_a_long_runs_metrics_are_live_before_it_ends(calls):
    _, run = _nested("long")
    run.log_metrics({"loss": 0.9}, step=1)
    run.flush_soon(delay_s=0.2)
    deadline = time.monotonic() + 20
    while run.run_id is None or not tracking.get_run(run.run_id).data.metrics:
        assert time.monotonic() < deadline, "the buffered step never reached MLflow"
        time.sleep(0.05)
    assert tracking.get_run(run.run_id).info.status == "RUNNING"
    run.end()
    tracking.writer().submit(run.flush)
    assert tracking.writer().flush(30)
    assert tracking.get_run(run.run_id).info.status == "FINISHED"
    assert calls["create_run"] == 2  # the parent and this run, once each


def test_writes_run_in_order_and_a_failing_write_is_kept_not_raised(raymlp_home):
    writer = tracking.Writer("test-writer")
    seen: list[int] = []
    gate = threading.Event()
    writer.submit(gate.wait, 10)
    for i in range(5):
        writer.submit(seen.append, i)
    writer.submit(seen.append, -1, first=True)  # ahead of what is still queued
    writer.submit(lambda: 1 / 0)
    gate.set()
    assert writer.flush(10)
    assert seen == [-1, 0, 1, 2, 3, 4]
    assert writer.errors == ["ZeroDivisionError: division by zero"]


def test_the_writer_lets_go_of_a_finished_writes_arguments():
    """A write's arguments are freed when it is done, not whenever the next write comes (a
    Ray handle freed late, in the writer's thread after ray.shutdown(), ends the process)."""
    import gc
    import weakref

    class Held:
        pass

    held = Held()
    ref = weakref.ref(held)
    tracking.writer().submit(lambda _h: None, held)
    del held
    assert tracking.writer().flush(10)
    gc.collect()
    assert ref() is None


def test_a_failed_flush_keeps_its_writes_for_the_next(raymlp_home, monkeypatch):
    """The store's failure is injected (log_batch raises once); everything else is real."""
    from mlflow import MlflowClient

    _, run = _nested("retried")
    run.log_metrics({"loss": 0.5}, step=1)
    run.end()
    real = MlflowClient.log_batch
    monkeypatch.setattr(MlflowClient, "log_batch", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("database is locked")))
    with pytest.raises(RuntimeError, match="locked"):
        run.flush()
    assert tracking.get_run(run.run_id).info.status == "RUNNING"
    monkeypatch.setattr(MlflowClient, "log_batch", real)
    run.flush()
    got = tracking.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.data.params == {"lr": "0.1", "opt.m": "2"}
    assert tracking.metric_history(run.run_id, "loss") == [(1, 0.5)]


def test_the_sqlite_store_runs_in_wal_mode_with_normal_sync(raymlp_home):
    """Cheap commits (no rollback journal to sync twice per write), on every connection MLflow
    opens to the store, and only there."""
    import sqlite3

    mlc = tracking.client()
    tracking.experiment_id()
    engine = mlc._tracking_client.store.engine  # MLflow's own connections to the store
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    other = raymlp_home / "other.db"
    from sqlalchemy import create_engine

    with create_engine(f"sqlite:///{other}").connect() as conn:  # not raymlp's store
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL, untouched
    with sqlite3.connect(other) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
