"""MLflow records, registration, crash-proof resume and TrainJob trials (acceptance 5-7)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from raymlp import tracking, tune
from raymlp.tune import _journal
from tests.helpers import wait_for
from tests.tune import trials

pytestmark = [pytest.mark.slow]


def test_parallel_trials_are_nested_runs_with_no_lock_errors(ray_session, caplog):
    caplog.set_level(logging.WARNING)
    exp = tune.Experiment(trial=trials.quadratic, name="parallel-4", algorithm="random",
                          objective="loss", space={"x": tune.uniform(0, 1), "steps": 3},
                          max_trials=8, parallel_trials=4, seed=1)
    result = exp.run(resume=False)
    assert len(result.trials) == 8

    parent = tracking.get_run(result.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["raymlp.kind"] == "tune"
    children = tracking.child_runs(result.run_id)
    assert len(children) == 8
    for child in children:
        assert child.info.status == "FINISHED"
        assert 0 <= float(child.data.params["x"]) <= 1
        assert [s for s, _ in tracking.metric_history(child.info.run_id, "loss")] == [1, 2, 3]
    assert tracking.get_run(result.best.run_id).data.tags["raymlp.tune.best"] == "true"
    assert result.best.value == min(result.trials.value)
    assert not [r for r in caplog.records if "database is locked" in r.getMessage()]


def test_the_best_trial_registers_with_lineage_and_predicts(ray_session):
    exp = tune.Experiment(trial=trials.sklearn_trial, name="iris-c", algorithm="grid",
                          objective=tune.Objective(metric="accuracy", goal="max"),
                          space={"C": tune.grid([1e-3, 1.0])}, data_hash="abc123")
    result = exp.run(resume=False)
    assert result.best.params == {"C": 1.0}
    version = result.best.register("tune-iris", alias="champion")
    lineage = tracking.lineage("tune-iris", version.version)
    assert lineage["raymlp.source_run_id"] == result.best.run_id
    assert lineage["raymlp.data_hash"] == "abc123"
    assert version.tags["raymlp.tune.experiment"] == "iris-c"
    from sklearn.datasets import load_iris

    x, _ = load_iris(return_X_y=True)
    model = tracking.load_model("models:/tune-iris@champion")
    assert model.predict(x[:4]).shape[0] == 4


DRIVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from raymlp import tune
    from tests.tune import trials
    exp = tune.Experiment(trial=trials.slow_quadratic, name="crashy", algorithm="bayesian",
                          objective="loss", space={{"x": tune.uniform(-1, 1), "sleep_s": 0.3,
                                                   "marker_dir": {marker!r}}},
                          max_trials=10, parallel_trials=2, seed=3,
                          algorithm_settings={{"n_startup_trials": 3}})
    exp.run()
""")


def test_driver_killed_mid_experiment_resumes_without_rerunning(ray_session, tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(repo=repo, marker=str(tmp_path)))
    env = {**os.environ, "RAYMLP_RAY_ADDRESS": ray_session.address}
    driver = subprocess.Popen([sys.executable, str(script)], env=env, cwd=repo,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = _journal.Journal("crashy")
    try:
        wait_for("4 finished trials", lambda: len(journal.finished()) >= 4 or
                 driver.poll() is not None, timeout=180)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    before = journal.finished()
    assert 4 <= len(before) < 10, driver.stderr.read().decode()[-3000:]
    assert tune.status("crashy")["status"] == "running"  # as the crash left it

    exp = tune.Experiment(trial=trials.slow_quadratic, name="crashy", algorithm="bayesian",
                          objective="loss", space={"x": tune.uniform(-1, 1), "sleep_s": 0.3,
                                                   "marker_dir": str(tmp_path)},
                          max_trials=10, parallel_trials=2, seed=3,
                          algorithm_settings={"n_startup_trials": 3})
    result = exp.run()
    after = journal.finished()
    assert len(after) == 10 and len(result.trials) == 10
    ids = [r["trial_id"] for r in after]
    assert len(set(ids)) == 10
    assert after[:len(before)] == before  # kept as they were, not run again
    xs = [r["params"]["x"] for r in after]
    assert len(set(xs)) == 10  # no finished params proposed again
    ran = (tmp_path / "ran.txt").read_text().split()
    assert all(ran.count(repr(x)) == 1 for x in xs[:len(before)])
    assert result.searcher_trials == 10  # the history before the crash and the trials since
    status = tune.status("crashy")
    assert status["status"] == "finished" and status["trials"] == 10
    # Raising max_trials continues the same experiment.
    more = dataclasses.replace(exp, max_trials=11).run()
    assert len(more.trials) == 11 and more.run_id == result.run_id


def test_a_two_worker_train_job_is_a_trial(ray_session, examples_path):
    import train_digits

    from raymlp import train

    job = train.TrainJob(loop=train_digits.digits_loop, framework="torch", name="digits-tune",
                         scaling=train.Scaling(workers=2, cpus=0.5),
                         config={"hidden": 32, "batch_size": 64, "epochs": 2})
    exp = tune.Experiment(trial=job, name="digits-lr", algorithm="grid", parallel_trials=2,
                          objective=tune.Objective(metric="val_accuracy", goal="max"),
                          space={"lr": tune.grid([3e-3, 1e-5])})
    result = exp.run(resume=False)
    assert len(result.trials) == 2 and set(result.trials.status) == {"completed"}
    assert result.best.params == {"lr": 3e-3}
    assert result.best.steps == 2
    run = tracking.get_run(result.best.run_id)
    assert run.data.tags["mlflow.parentRunId"] == result.run_id
    assert run.data.params["lr"] == "0.003"
    assert result.best.model_uri
    model = result.best.load_model()
    import numpy as np

    assert model.predict(np.zeros((2, 64), dtype=np.float32)).shape[0] == 2


def test_cli_runs_a_katib_file_and_shows_it(ray_session, tmp_path, capsys):

    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent("""
        name: cli-katib
        trial: tests.tune.trials:quadratic
        objective: {type: minimize, objectiveMetricName: loss, additionalMetricNames: [aux]}
        algorithm: {algorithmName: random}
        parallelTrialCount: 2
        maxTrialCount: 3
        parameters:
          - {name: x, parameterType: double, feasibleSpace: {min: "0", max: "1"}}
        constants: {steps: 2}
        seed: 0
    """))
    assert _main(["tune", "run", str(path), "--set", "maxTrialCount=4"]) == 0
    out = _json_tail(capsys.readouterr().out)
    assert out["trials"] == 4 and out["best"]["run_id"]
    assert _main(["tune", "status", "cli-katib"]) == 0
    status = _json_tail(capsys.readouterr().out)
    assert status["status"] == "finished" and status["trials"] == 4
    assert _main(["tune", "list"]) == 0
    assert "cli-katib" in capsys.readouterr().out
    path.write_text(path.read_text().replace("objectiveMetricName", "objectiveMetric"))
    assert _main(["tune", "run", str(path)]) == 2
    assert "experiment.objective: unknown field 'objectiveMetric'" in capsys.readouterr().err


def _json_tail(text: str) -> dict:
    """The JSON document a command prints last (after its progress lines)."""
    start = 0 if text.startswith("{") else text.rindex("\n{") + 1
    return json.loads(text[start:])


def _main(argv):
    """The ``raymlp`` command (its parser, when every capability's commands load)."""
    from raymlp import cli

    return cli.main(argv)
