"""Tuning overhead: raymlp.tune (Ray Tune + Optuna TPE, MLflow on) against a plain Optuna loop.

Run: python benchmarks/tune_overhead.py [--trials 50] [--parallel 2]

Both sides tune the *same* trivial objective (:func:`objective`: one report per trial, no
work) for ``--trials`` trials with Optuna's TPE sampler:

* plain: ``optuna.create_study().optimize(...)`` in this process, nothing recorded;
* raymlp: ``tune.Experiment(algorithm="bayesian", parallel_trials=2).run()`` as users run it,
  after ``raymlp.init()`` (Ray already up, not timed) — every trial a nested MLflow run with its
  params and metrics, the experiment journaled for resume.

What a process pays once — importing Optuna, Ray Tune and MLflow, opening the MLflow store — is
not a per-trial cost: it is done before either side is timed and reported as ``startup_s``.

Then ``early_stop_steps_saved``: the share of steps ASHA saves on 20 trials of 9 steps whose
learning curves are known (most clearly bad by step 3).

The last line is ``RESULT {"per_trial_overhead_s": ..., "plain_per_trial_s": ...,
"raymlp_per_trial_s": ..., "early_stop_steps_saved": ..., "startup_s": ..., "ratio": ...}`` (ratio:
raymlp's time per trial over plain Optuna's); target: per-trial overhead <= 0.15 s on a 2-core
machine.
"""

from __future__ import annotations

import argparse
import json
import time


def objective(ctx) -> None:
    x, y = ctx.config["x"], ctx.config["y"]
    ctx.report({"loss": (x - 0.3) ** 2 + (y + 0.1) ** 2})


def curve(ctx) -> None:
    for step in range(9):
        ctx.report({"loss": ctx.config["q"] + 1.0 / (step + 1)})


def startup() -> float:
    """The one-time costs of a process that tunes: imports and opening the MLflow store."""
    start = time.perf_counter()
    import mlflow  # noqa: F401
    import optuna  # noqa: F401
    import ray.tune  # noqa: F401

    from raymlp import tracking

    tracking.experiment_id()
    return time.perf_counter() - start


def plain(trials: int) -> float:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, multivariate=True))
    start = time.perf_counter()
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.3) ** 2
                   + (t.suggest_float("y", -1, 1) + 0.1) ** 2, n_trials=trials)
    return (time.perf_counter() - start) / trials


def raymlp_side(trials: int, parallel: int) -> float:
    from raymlp import tune

    exp = tune.Experiment(trial=objective, name="bench-overhead", algorithm="bayesian",
                          objective="loss", space={"x": tune.uniform(-1, 1),
                                                   "y": tune.uniform(-1, 1)},
                          max_trials=trials, parallel_trials=parallel, seed=0)
    start = time.perf_counter()
    result = exp.run(resume=False)
    elapsed = time.perf_counter() - start
    assert len(result.trials) == trials
    return elapsed / trials


def steps_saved() -> float:
    from raymlp import tune

    qs = [0.05, 0.1] + [0.7 + 0.015 * i for i in range(18)]
    exp = tune.Experiment(trial=curve, name="bench-early-stop", algorithm="grid",
                          objective="loss", space={"q": tune.grid(qs)}, parallel_trials=2,
                          early_stopping=tune.EarlyStopping(algorithm="asha", max_t=9,
                                                            start_step=3))
    result = exp.run(resume=False)
    return 1.0 - float(result.trials.steps.sum()) / (9 * len(qs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()

    import raymlp

    raymlp.init()
    startup_s = startup()
    plain_s = plain(args.trials)
    raymlp_s = raymlp_side(args.trials, args.parallel)
    saved = steps_saved()
    result = {"per_trial_overhead_s": round(raymlp_s - plain_s, 4),
              "plain_per_trial_s": round(plain_s, 5), "raymlp_per_trial_s": round(raymlp_s, 4),
              "early_stop_steps_saved": round(saved, 3), "startup_s": round(startup_s, 2),
              "ratio": round(raymlp_s / plain_s, 1)}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
