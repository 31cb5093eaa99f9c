"""Experiment specs and experiment files: bad input is a SpecError naming the field, the value
and what is allowed, before any Ray work."""

from __future__ import annotations

import threading

import pytest

from raymlp import tune
from raymlp.errors import SpecError
from raymlp.tune._file import read
from tests.tune import trials


def _exp(**kw):
    base = {"trial": trials.quadratic, "space": {"x": tune.uniform(0, 1)}, "objective": "loss",
            "max_trials": 4}
    return tune.Experiment(**{**base, **kw})


@pytest.mark.parametrize(("kw", "field", "allowed"), [
    ({"algorithm": "annealing"}, "Experiment.algorithm", "one of"),
    ({"space": {"x": tune.grid([1, 2])}}, "Experiment.space['x']", "algorithm='grid'"),
    ({"algorithm": "grid", "space": {"x": tune.uniform(0, 1)}}, "Experiment.space['x']",
     "grid(...) or choice(...)"),
    ({"space": {"x": tune.uniform(1, 1)}}, "Experiment.space['x'].high", "inverted"),
    ({"space": {"x": tune.uniform(2, 1)}}, "Experiment.space['x'].high", "inverted"),
    ({"space": {"x": tune.loguniform(0, 1)}}, "Experiment.space['x'].low", "> 0"),
    ({"space": {"x": tune.logint(0, 8)}}, "Experiment.space['x'].low", ">= 1"),
    ({"space": {"x": tune.choice([])}}, "Experiment.space['x'].values", "non-empty"),
    ({"space": {"x": 3}}, "Experiment.space", "at least one domain"),
    ({"objective": {"metric": "val_loss", "goal": "min", "target": -0.1}},
     "Objective.target", "reachable"),
    ({"objective": {"metric": "val_accuracy", "goal": "max", "target": 1.5}},
     "Objective.target", "reachable"),
    ({"algorithm": "asha", "early_stopping": "median"}, "Experiment.early_stopping", "None"),
    ({"algorithm_settings": {"max_t": 3}}, "Experiment.algorithm_settings['max_t']",
     "n_startup_trials"),
    ({"max_trials": None}, "Experiment.max_trials", "integer"),
    ({"parallel_trials": 0}, "Experiment.parallel_trials", ">= 1"),
    ({"name": "Not A Label"}, "Experiment.name", "DNS label"),
])
def test_bad_specs_name_the_field(kw, field, allowed):
    with pytest.raises(SpecError) as err:
        if isinstance(kw.get("objective"), dict):
            kw = {**kw, "objective": tune.Objective(**kw["objective"])}
        _exp(**kw)
    assert err.value.field == field
    assert allowed in err.value.allowed


def test_katib_aliases_and_grid_defaults():
    assert _exp(algorithm="bayesianoptimization").algorithm == "bayesian"
    assert _exp(algorithm="multivariate-tpe").algorithm == "bayesian"
    assert _exp(algorithm="TPE").algorithm == "bayesian"
    g = tune.Experiment(trial=trials.quadratic, objective="loss", algorithm="grid",
                        space={"x": tune.grid([1, 2, 3]), "o": {"y": tune.choice(["a", "b"])}})
    assert g.max_trials == 6 and g.grid_size == 6
    assert set(g.domains) == {"x", "o.y"}


def test_unpicklable_trial_fails_before_any_ray_work(raymlp_home):
    import ray

    lock = threading.Lock()

    def trial(ctx):
        with lock:
            ctx.report({"loss": 1.0})

    was_up = ray.is_initialized()
    with pytest.raises(SpecError) as err:
        _exp(trial=trial, name="unpicklable").run()
    assert err.value.field == "Experiment.trial"
    assert ray.is_initialized() == was_up


def _file(**over):
    data = {
        "name": "katib", "trial": "tests.tune.trials:quadratic",
        "objective": {"type": "minimize", "objectiveMetricName": "loss", "goal": 0.01,
                      "additionalMetricNames": ["aux"],
                      "metricStrategies": [{"name": "loss", "value": "min"}]},
        "algorithm": {"algorithmName": "tpe",
                      "algorithmSettings": [{"name": "n_startup_trials", "value": "3"}]},
        "earlyStopping": {"algorithmName": "medianstop", "algorithmSettings": [
            {"name": "min_trials_required", "value": "2"}, {"name": "start_step", "value": "2"}]},
        "parallelTrialCount": 2, "maxTrialCount": 6, "maxFailedTrialCount": 1,
        "parameters": [
            {"name": "x", "parameterType": "double",
             "feasibleSpace": {"min": "0.001", "max": "1", "distribution": "logUniform"}},
            {"name": "n", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "9",
                                                                     "step": "2"}},
            {"name": "opt.kind", "parameterType": "categorical",
             "feasibleSpace": {"list": ["adam", "sgd"]}},
            {"name": "d", "parameterType": "discrete", "feasibleSpace": {"list": ["0.1", "0.5"]}},
        ],
        "constants": {"steps": 3},
        "seed": 0,
    }
    for key, value in over.items():
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(last)
        else:
            node[last] = value
    return data


def test_katib_file_maps_one_to_one():
    exp = read(_file())
    assert exp.trial is trials.quadratic
    assert exp.objective == tune.Objective(metric="loss", goal="min", target=0.01,
                                           strategy="min", additional_metrics=("aux",))
    assert exp.algorithm == "bayesian" and exp.algorithm_settings == {"n_startup_trials": 3}
    assert exp.early_stopping == tune.EarlyStopping(algorithm="median", min_trials_required=2,
                                                    start_step=2)
    assert (exp.max_trials, exp.parallel_trials, exp.max_failed_trials) == (6, 2, 1)
    d = exp.domains
    assert d["x"] == tune.loguniform(0.001, 1.0)
    assert d["n"] == tune.randint(1, 9, step=2)
    assert d["opt.kind"] == tune.choice(["adam", "sgd"])
    assert d["d"] == tune.choice([0.1, 0.5])
    assert exp.constants == {"steps": 3}
    # A whole Katib manifest reads the same.
    manifest = {"apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment",
                "metadata": {"name": "katib"}, "spec": {k: v for k, v in _file().items()
                                                        if k != "name"}}
    assert read(manifest) == exp


@pytest.mark.parametrize(("over", "field"), [
    ({"objective.objectiveMetricName": None}, "experiment.objective"),
    ({"objective.type": "minimise"}, "objective.type"),
    ({"objective.goal": "low"}, "experiment.objective.goal"),
    ({"algorithm.algorithmName": "annealing"}, "Experiment.algorithm"),
    ({"parallelTrialCount": "two"}, "experiment.parallelTrialCount"),
    ({"maxTrialCounts": 3}, "experiment.maxTrialCounts"),
    ({"parameters": []}, "parameters"),
    ({"earlyStopping.algorithmName": "truncation"}, "earlyStopping.algorithmName"),
    ({"trial": "tests.tune.trials:nope"}, "trial"),
])
def test_malformed_file_names_the_field(over, field):
    with pytest.raises(SpecError) as err:
        read(_file(**over))
    assert err.value.field == field, err.value


def test_malformed_parameter_names_its_index():
    data = _file()
    data["parameters"][1]["feasibleSpace"] = {"min": 5, "max": 2}
    with pytest.raises(SpecError) as err:
        read(data)
    assert err.value.field == "Experiment.space['n'].high"
    data = _file()
    data["parameters"][0]["parameterType"] = "float"
    with pytest.raises(SpecError) as err:
        read(data)
    assert err.value.field == "parameters[0].parameterType"


def test_spec_round_trips_through_file_data():
    from raymlp.tune._file import to_file_data

    exp = read(_file())
    assert read(to_file_data(exp)) == exp
