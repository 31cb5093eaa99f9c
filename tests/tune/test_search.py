"""Algorithms, early stopping, targets and limits on a real local Ray (acceptance 1-4)."""

from __future__ import annotations

import statistics

import pytest

from raymlp import tracking, tune
from raymlp.errors import ExperimentError
from raymlp.tune._searcher import OptunaSearcher
from tests.tune import trials

pytestmark = [pytest.mark.slow]

BRANIN_MIN = 0.397887
BRANIN_SPACE = {"x1": tune.uniform(-5, 10), "x2": tune.uniform(0, 15)}


def _search_branin(sampler: str, seed: int, n: int = 60) -> float:
    """Drive the searcher through Ray Tune's Searcher interface, one trial at a time."""
    s = OptunaSearcher(tune.Experiment(trial=trials.branin_trial, space=BRANIN_SPACE,
                                       objective="value", max_trials=n).domains,
                       tune.Objective(metric="value"), sampler=sampler, seed=seed)
    best = float("inf")
    for i in range(n):
        cfg = s.suggest(str(i))
        v = trials.branin(cfg["x1"], cfg["x2"])
        s.on_trial_result(str(i), {"value": v})
        s.on_trial_complete(str(i), {"value": v})
        best = min(best, v)
    return best


def test_bayesian_beats_random_on_branin():
    bayes = [_search_branin("tpe", seed) for seed in range(3)]
    rand = [_search_branin("random", seed) for seed in range(3)]
    assert statistics.mean(bayes) <= 0.45, bayes
    assert statistics.mean(bayes) < statistics.mean(rand), (bayes, rand)


ALGOS = ["random", "grid", "bayesian", "gp", "cmaes", "sobol", "hyperband", "asha", "bohb", "pbt"]


@pytest.mark.parametrize("algorithm", ALGOS)
def test_every_algorithm_runs_seeded_end_to_end(ray_session, algorithm):
    space = ({"x": tune.grid([0.1, 0.6, 0.9]), "steps": 2} if algorithm == "grid"
             else {"x": tune.uniform(0, 1), "steps": 2})
    settings = {"max_t": 2} if algorithm in ("asha", "hyperband", "bohb") else {}
    exp = tune.Experiment(trial=trials.quadratic, name=f"algo-{algorithm}", space=space,
                          objective="loss", algorithm=algorithm, algorithm_settings=settings,
                          max_trials=3, seed=0)
    result = exp.run(resume=False)
    assert len(result.trials) == 3
    assert set(result.trials.status) <= {"completed", "stopped"}
    assert result.best is not None and result.best.value == result.trials.value.min()
    assert 0 <= result.best.params["x"] <= 1
    if algorithm == "grid":
        assert sorted(result.trials["param.x"]) == [0.1, 0.6, 0.9]


def test_seeded_run_is_reproducible_and_grid_visits_the_product(ray_session):
    def run(name):
        return tune.Experiment(trial=trials.branin_trial, name=name, space=BRANIN_SPACE,
                               objective="value", algorithm="bayesian", max_trials=6,
                               seed=7).run(resume=False)

    a, b = run("seeded-a"), run("seeded-b")
    pa = a.trials.sort_values("number")[["param.x1", "param.x2"]].values.tolist()
    pb = b.trials.sort_values("number")[["param.x1", "param.x2"]].values.tolist()
    assert pa == pb

    grid = tune.Experiment(trial=trials.quadratic, name="grid-product", objective="loss",
                           algorithm="grid", parallel_trials=2,
                           space={"x": tune.grid([0.0, 0.5, 1.0]),
                                  "steps": tune.grid([1, 2])})
    result = grid.run(resume=False)
    seen = sorted(zip(result.trials["param.x"], result.trials["param.steps"], strict=True))
    assert seen == sorted((x, s) for x in (0.0, 0.5, 1.0) for s in (1, 2))


# Known curves: loss = q + 1 / step; two good trials first, then nine clearly bad by step 3.
CURVE_QS = [0.05, 0.1, 2.0, 2.5, 3.0, 2.2, 2.7, 2.9, 2.1, 2.4, 2.6]


@pytest.fixture(scope="module")
def full_curves(ray_session):
    exp = tune.Experiment(trial=trials.curves, name="curves-none", objective="loss",
                          algorithm="grid", space={"q": tune.grid(CURVE_QS), "steps": 9})
    return exp.run(resume=False)


@pytest.mark.parametrize("early_stopping", [
    tune.EarlyStopping(algorithm="asha", max_t=9, start_step=3, reduction_factor=3),
    tune.EarlyStopping(algorithm="hyperband", max_t=9, start_step=1, reduction_factor=3),
    tune.EarlyStopping(algorithm="median", start_step=3, min_trials_required=1),
], ids=["asha", "hyperband", "median"])
def test_early_stopping_stops_bad_trials_and_keeps_the_best(full_curves, early_stopping):
    exp = tune.Experiment(trial=trials.curves, name=f"curves-{early_stopping.algorithm}",
                          objective="loss", algorithm="grid", early_stopping=early_stopping,
                          space={"q": tune.grid(CURVE_QS), "steps": 9})
    result = exp.run(resume=False)
    full_steps = int(full_curves.trials.steps.sum())
    assert full_steps == 9 * len(CURVE_QS)
    assert int(result.trials.steps.sum()) <= 0.5 * full_steps, result.trials[["param.q", "steps"]]
    assert (result.trials.status == "stopped").sum() >= 4
    assert result.best.params == full_curves.best.params == {"q": 0.05}


def test_target_ends_the_experiment_with_the_reason(ray_session):
    exp = tune.Experiment(trial=trials.curves, name="target", algorithm="grid",
                          objective=tune.Objective(metric="loss", goal="min", target=0.3),
                          space={"q": tune.grid([0.9, 0.8, 0.05, 0.7, 0.6, 0.5]), "steps": 4})
    result = exp.run(resume=False)
    assert "target loss<=0.3 reached" in result.stop_reason
    assert len(result.trials) < 6  # trials after the one that reached it never ran
    assert result.best.params == {"q": 0.05}
    parent = tracking.get_run(result.run_id)
    assert "target loss<=0.3 reached" in parent.data.tags["raymlp.stop_reason"]


def test_failed_trials_are_recorded_and_the_budget_ends_the_experiment(ray_session):
    exp = tune.Experiment(trial=trials.flaky, name="flaky", algorithm="grid",
                          objective="loss", max_failed_trials=2,
                          space={"x": tune.grid([0.1, 0.9, 0.2, 0.3]), "fail_above": 0.5})
    result = exp.run(resume=False)  # one failure, within the budget: it goes on
    failed = result.trials[result.trials.status == "failed"]
    assert list(failed["param.x"]) == [0.9]
    assert "ValueError: bad x=0.9" in failed.error.iloc[0]
    assert len(result.trials) == 4 and result.best.params == {"x": 0.1}
    run = tracking.get_run(failed.run_id.iloc[0])
    assert run.info.status == "FAILED"
    assert "bad x=0.9" in run.data.tags["raymlp.tune.error"]

    over = tune.Experiment(trial=trials.flaky, name="flaky-over", algorithm="grid",
                           objective="loss", max_failed_trials=1,
                           space={"x": tune.grid([0.6, 0.7, 0.8, 0.9, 0.1]), "fail_above": 0.5})
    with pytest.raises(ExperimentError) as err:
        over.run(resume=False)
    assert len(err.value.failures) == 2
    assert "bad x=0.6" in str(err.value) and "bad x=0.7" in str(err.value)
    assert tune.status("flaky-over")["status"] == "failed"


def test_a_killed_trial_process_is_retried_and_counted_once(ray_session, tmp_path):
    exp = tune.Experiment(trial=trials.killed_once, name="killed", algorithm="grid",
                          objective="loss", parallel_trials=2, max_retries=1,
                          space={"x": tune.grid([0.2, 0.4, 0.6]), "kill_x": 0.4,
                                 "marker_dir": str(tmp_path)})
    result = exp.run(resume=False)
    assert len(result.trials) == 3
    assert set(result.trials.status) == {"completed"}
    killed = result.trials[result.trials["param.x"] == 0.4].iloc[0]
    assert killed.retries == 1 and killed.steps == 2
    assert len(list(tmp_path.glob("*.started"))) == 1


def test_parallel_trials_beyond_the_cluster_fail_before_any_trial(ray_session):
    from raymlp.errors import ResourceError
    from raymlp.tune import _journal

    exp = tune.Experiment(trial=trials.quadratic, name="too-wide", objective="loss",
                          space={"x": tune.uniform(0, 1)}, max_trials=4, parallel_trials=3,
                          cpus=2)  # the session's Ray has 4 CPUs: 2 such trials at most
    with pytest.raises(ResourceError) as err:
        exp.run(resume=False)
    assert err.value.field == "Experiment.parallel_trials"
    assert err.value.allowed == "at most 2"
    assert not _journal.exists("too-wide")
