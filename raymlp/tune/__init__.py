"""raymlp.tune: hyperparameter tuning with Katib's experiment semantics on Ray Tune and Optuna.

An :class:`Experiment` (spec) names the trial (a function or a
:class:`~raymlp.train.TrainJob`), the search space, the :class:`Objective`, the algorithm and the
limits; :meth:`Experiment.run` (action) runs it on Ray Tune with Optuna's samplers and returns an
:class:`ExperimentResult` (the best :class:`Trial`, every trial as a DataFrame, why it ended).
Every trial is a nested MLflow run; the experiment resumes after a crash of its driver.

Example:
    >>> from raymlp import tune
    >>> def trial(ctx):
    ...     for step in range(10):
    ...         ctx.report({"loss": (ctx.config["lr"] - 0.01) ** 2 / (step + 1)})
    >>> exp = tune.Experiment(trial=trial, name="lr", space={"lr": tune.loguniform(1e-4, 1)},
    ...                       objective=tune.Objective(metric="loss", goal="min"),
    ...                       algorithm="bayesian", max_trials=20, parallel_trials=2, seed=0)
    >>> exp.run().best.params
"""

from raymlp.tune._context import TrialContext
from raymlp.tune._result import ExperimentResult, Trial
from raymlp.tune._space import (
    choice,
    grid,
    logint,
    loguniform,
    quniform,
    randint,
    uniform,
)
from raymlp.tune._spec import ALGORITHMS, EarlyStopping, Experiment, Objective
from raymlp.tune._status import experiments, resume, status

__all__ = [
    "ALGORITHMS",
    "EarlyStopping",
    "Experiment",
    "ExperimentResult",
    "Objective",
    "Trial",
    "TrialContext",
    "choice",
    "experiments",
    "grid",
    "logint",
    "loguniform",
    "quniform",
    "randint",
    "resume",
    "status",
    "uniform",
]
