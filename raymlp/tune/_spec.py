"""Tuning specs: :class:`Experiment`, :class:`Objective`, :class:`EarlyStopping`.

Frozen, keyword-only dataclasses checked at construction through :mod:`raymlp._spec`. What
needs the runtime (the trial pickles, the cluster can hold ``parallel_trials`` trials at once)
is checked by :meth:`Experiment.run` before any Ray work.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from raymlp import _spec
from raymlp.tune._space import Choice, Domain, Grid, flatten

# algorithm -> (Optuna sampler, Ray Tune scheduler or None). Katib's names are aliases.
ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "random": ("random", None),
    "grid": ("grid", None),
    "bayesian": ("tpe", None),
    "gp": ("gp", None),
    "cmaes": ("cmaes", None),
    "sobol": ("sobol", None),
    "hyperband": ("random", "hyperband"),
    "asha": ("random", "asha"),
    # TuneBOHB needs hpbandster (last released 2018) and the pre-1.0 ConfigSpace API: raymlp
    # runs BOHB's idea as TPE sampling under (asynchronous) HyperBand scheduling instead.
    "bohb": ("tpe", "hyperband"),
    "pbt": ("random", "pbt"),
}
ALIASES = {
    "bayesianoptimization": "bayesian",
    "tpe": "bayesian",
    "multivariate-tpe": "bayesian",
}
EARLY_STOPPING = ("median", "asha", "hyperband")
# Metric names (words of) whose values are never below 0, and those that are fractions in [0, 1].
_NON_NEGATIVE = {"loss", "error", "mse", "rmse", "mae", "perplexity", "nll", "logloss"}
_FRACTIONS = {"accuracy", "acc", "auc", "f1", "precision", "recall"}
GOALS = ("min", "max")
STRATEGIES = ("latest", "min", "max")
# Settings each algorithm takes (Katib's algorithmSettings); anything else is an error.
SETTINGS: dict[str, dict[str, str]] = {
    "random": {},
    "grid": {},
    "bayesian": {"n_startup_trials": "int"},
    "gp": {"n_startup_trials": "int"},
    "cmaes": {"n_startup_trials": "int", "sigma0": "float"},
    "sobol": {"scramble": "bool"},
    "hyperband": {"max_t": "int", "reduction_factor": "float", "brackets": "int"},
    "asha": {"max_t": "int", "grace_period": "int", "reduction_factor": "float"},
    "bohb": {"max_t": "int", "reduction_factor": "float", "brackets": "int",
             "n_startup_trials": "int"},
    "pbt": {"perturbation_interval": "int", "quantile_fraction": "float",
            "resample_probability": "float"},
}
# Samplers that take a grid(...) domain (the grid algorithm runs their product).
_GRID_SAMPLERS = ("grid",)


def resolve_algorithm(field: str, name: Any) -> str:
    """The canonical algorithm name of ``name`` (Katib's names accepted)."""
    if isinstance(name, str) and name.lower() in ALIASES:
        return ALIASES[name.lower()]
    return _spec.choice(field, name.lower() if isinstance(name, str) else name,
                        [*ALGORITHMS, *ALIASES])


@dataclasses.dataclass(frozen=True, kw_only=True)
class Objective:
    """What a trial is judged by.

    Args:
        metric: the reported metric to optimize.
        goal: ``"min"`` or ``"max"``.
        target: end the experiment as soon as a trial reaches this value (Katib's ``goal``).
        strategy: how a trial's reports make its value: ``"latest"`` (the last report),
            ``"min"`` or ``"max"`` over all of them (Katib's metric strategies).
        additional_metrics: other reported metrics recorded with each trial.

    Example:
        >>> Objective(metric="val_loss", goal="min", target=0.05)
    """

    metric: str
    goal: str = "min"
    target: float | None = None
    strategy: str = "latest"
    additional_metrics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _spec.string("Objective.metric", self.metric, allowed="a metric name")
        _spec.choice("Objective.goal", self.goal, GOALS)
        _spec.number("Objective.target", self.target, optional=True)
        self._check_target()
        _spec.choice("Objective.strategy", self.strategy, STRATEGIES)
        if isinstance(self.additional_metrics, list):
            object.__setattr__(self, "additional_metrics", tuple(self.additional_metrics))
        if not isinstance(self.additional_metrics, tuple) or not all(
                isinstance(m, str) and m for m in self.additional_metrics):
            raise _spec.fail("Objective.additional_metrics", self.additional_metrics,
                             "a list of metric names")

    def _check_target(self) -> None:
        """A target the metric can never reach on the goal's side is a mistake (a loss is never
        below 0, an accuracy never above 1): the experiment would never end on it."""
        if self.target is None:
            return
        name = self.metric.lower()
        words = set(re.split(r"[^a-z0-9]+", name))
        if self.goal == "min" and words & _NON_NEGATIVE and self.target < 0:
            raise _spec.fail("Objective.target", self.target,
                             f"a reachable value (>= 0: {self.metric!r} is never negative)")
        if self.goal == "max" and words & _FRACTIONS and self.target > 1:
            raise _spec.fail("Objective.target", self.target,
                             f"a reachable value (<= 1: {self.metric!r} is a fraction)")

    def better(self, a: float, b: float | None) -> bool:
        """Whether value ``a`` beats ``b`` (None: nothing yet)."""
        return b is None or (a < b if self.goal == "min" else a > b)

    def reached(self, value: float) -> bool:
        """Whether ``value`` reaches the target."""
        if self.target is None:
            return False
        return value <= self.target if self.goal == "min" else value >= self.target

    def fold(self, current: float | None, value: float) -> float:
        """A trial's value after one more report, by ``strategy``."""
        if current is None or self.strategy == "latest":
            return value
        return min(current, value) if self.strategy == "min" else max(current, value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EarlyStopping:
    """Stop trials that are clearly behind, from their own reports (no sidecar).

    Args:
        algorithm: ``"median"`` (Katib's median stopping rule), ``"asha"`` or ``"hyperband"``
            (asynchronous successive halving with one or several brackets).
        min_trials_required: median: trials that must have reached a step before a trial is
            judged at that step.
        start_step: the first step (report) at which a trial may be stopped.
        max_t: asha / hyperband: the most steps a trial runs.
        reduction_factor: asha / hyperband: the fraction 1/reduction_factor of trials kept at
            each rung.
    """

    algorithm: str = "median"
    min_trials_required: int = 3
    start_step: int = 1
    max_t: int = 100
    reduction_factor: float = 3

    def __post_init__(self) -> None:
        _spec.choice("EarlyStopping.algorithm", self.algorithm, EARLY_STOPPING)
        _spec.integer("EarlyStopping.min_trials_required", self.min_trials_required, minimum=1)
        _spec.integer("EarlyStopping.start_step", self.start_step, minimum=1)
        _spec.integer("EarlyStopping.max_t", self.max_t, minimum=1)
        _spec.number("EarlyStopping.reduction_factor", self.reduction_factor, minimum=1,
                     strict=True)
        if self.start_step > self.max_t:
            raise _spec.fail("EarlyStopping.start_step", self.start_step,
                             f"at most max_t={self.max_t}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Experiment:
    """A hyperparameter tuning experiment: the trial, the space, the objective, the search.

    Building one checks values only; :meth:`run` checks what needs the runtime (the trial can
    be pickled, the cluster can hold ``parallel_trials`` trials) before any Ray work.

    Args:
        trial: ``trial(ctx: TrialContext)`` calling ``ctx.report(metrics)`` once per step, or a
            :class:`raymlp.train.TrainJob` whose ``config`` receives the sampled values and
            whose workers' reports drive the trial.
        space: hyperparameter name -> domain (:func:`uniform`, :func:`loguniform`,
            :func:`choice`, :func:`grid`, ...) or constant; nested mappings nest.
        objective: the metric and its goal (a string is ``Objective(metric=...)``).
        name: the experiment's name (a DNS label): its record under the raymlp home, its MLflow
            parent run, what ``resume`` and ``raymlp tune status`` take.
        algorithm: ``random``, ``grid``, ``bayesian`` (multivariate TPE), ``gp``, ``cmaes``,
            ``sobol``, ``hyperband``, ``asha``, ``bohb``, ``pbt``; Katib's names
            (``bayesianoptimization``, ``tpe``, ``multivariate-tpe``) are aliases.
        algorithm_settings: the algorithm's settings (e.g. asha's ``max_t``,
            ``grace_period``, ``reduction_factor``); unknown ones are an error.
        early_stopping: ``"median"``, ``"asha"``, ``"hyperband"`` or an
            :class:`EarlyStopping`; None: trials run to the end. Not with ``hyperband``,
            ``asha``, ``bohb`` or ``pbt``, which schedule trials themselves.
        seed: makes the search reproducible.
        max_trials: how many trials to run in total (``grid``: default, the product of grids).
        parallel_trials: how many trials run at once.
        max_failed_trials: failed trials allowed; one more ends the experiment with an error
            listing them (None: no limit).
        max_retries: restarts of a trial whose process died (a trial that raises is not
            retried: it is recorded as failed).
        time_budget_s: end the experiment after this many seconds.
        cpus: CPUs per trial (a function trial; a TrainJob trial's workers use its scaling).
        gpus: GPUs per trial (function trials).
        experiment: MLflow experiment (default: the configured one).
        storage: root of the trials' checkpoints (default: the configured storage root).
        data_hash: digest of the data tuned on (lineage of a registered model).
        tags: extra tags on the MLflow parent run.

    Example:
        >>> exp = Experiment(trial=objective_fn, name="digits-lr", seed=0,
        ...                  space={"lr": loguniform(1e-4, 1e-1), "hidden": choice([32, 64])},
        ...                  objective=Objective(metric="val_loss", goal="min", target=0.05),
        ...                  algorithm="bayesian", early_stopping="median",
        ...                  max_trials=50, parallel_trials=4, max_failed_trials=3)
        >>> result = exp.run()
        >>> result.best.params, result.best.register("digits", alias="champion")
    """

    trial: Callable[..., Any] | Any
    space: Mapping[str, Any]
    objective: Objective | str
    name: str = "tune"
    algorithm: str = "bayesian"
    algorithm_settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    early_stopping: EarlyStopping | str | None = None
    seed: int | None = None
    max_trials: int | None = None
    parallel_trials: int = 1
    max_failed_trials: int | None = None
    max_retries: int = 1
    time_budget_s: float | None = None
    cpus: float = 1
    gpus: float = 0
    experiment: str | None = None
    storage: str | None = None
    data_hash: str | None = None
    tags: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        from raymlp.train import TrainJob

        if not (callable(self.trial) or isinstance(self.trial, TrainJob)):
            raise _spec.fail("Experiment.trial", self.trial,
                             "a function trial(ctx) or a raymlp.train.TrainJob")
        _spec.name("Experiment.name", self.name)
        if isinstance(self.objective, str):
            object.__setattr__(self, "objective", Objective(metric=self.objective))
        _spec.instance("Experiment.objective", self.objective, Objective,
                       what="a raymlp.tune.Objective or a metric name")
        algorithm = resolve_algorithm("Experiment.algorithm", self.algorithm)
        object.__setattr__(self, "algorithm", algorithm)
        self._check_space()
        self._check_settings()
        if isinstance(self.early_stopping, str):
            _spec.choice("Experiment.early_stopping", self.early_stopping, EARLY_STOPPING,
                         optional=True)
            object.__setattr__(self, "early_stopping", EarlyStopping(algorithm=self.early_stopping))
        _spec.instance("Experiment.early_stopping", self.early_stopping, EarlyStopping,
                       what="'median', 'asha', 'hyperband' or a raymlp.tune.EarlyStopping",
                       optional=True)
        if self.early_stopping is not None and ALGORITHMS[algorithm][1] is not None:
            raise _spec.fail("Experiment.early_stopping", self.early_stopping.algorithm,
                             f"None with algorithm={algorithm!r}, which stops trials early "
                             "itself")
        _spec.integer("Experiment.seed", self.seed, optional=True)
        _spec.integer("Experiment.max_trials", self.max_trials, minimum=1, optional=True)
        _spec.integer("Experiment.parallel_trials", self.parallel_trials, minimum=1)
        _spec.integer("Experiment.max_failed_trials", self.max_failed_trials, minimum=0,
                      optional=True)
        _spec.integer("Experiment.max_retries", self.max_retries, minimum=0)
        _spec.number("Experiment.time_budget_s", self.time_budget_s, minimum=0, strict=True,
                     optional=True)
        _spec.number("Experiment.cpus", self.cpus, minimum=0)
        _spec.number("Experiment.gpus", self.gpus, minimum=0)
        _spec.string("Experiment.experiment", self.experiment, optional=True)
        _spec.string("Experiment.storage", self.storage, optional=True,
                     allowed="a path or fsspec URL")
        _spec.string("Experiment.data_hash", self.data_hash, optional=True)
        _spec.mapping("Experiment.tags", self.tags)
        if self.algorithm == "grid" and self.max_trials is None:
            object.__setattr__(self, "max_trials", self.grid_size)
        if self.max_trials is None:
            raise _spec.fail("Experiment.max_trials", None,
                             f"an integer >= 1 (only algorithm='grid' has a default; this is "
                             f"{algorithm!r})")
        if algorithm == "grid" and self.max_trials > self.grid_size:
            raise _spec.fail("Experiment.max_trials", self.max_trials,
                             f"at most the grid's {self.grid_size} points")

    def _check_space(self) -> None:
        _spec.mapping("Experiment.space", self.space)
        flat = flatten(self.space)
        if not flat:
            raise _spec.fail("Experiment.space", self.space, "a non-empty mapping of names to "
                                                             "domains or constants")
        sampler = ALGORITHMS[self.algorithm][0]
        for key, value in flat.items():
            field = f"Experiment.space[{key!r}]"
            if isinstance(value, Domain):
                value.check(field)
                if isinstance(value, Grid) and sampler not in _GRID_SAMPLERS:
                    raise _spec.fail(field, "grid(...)", f"a sampled domain with algorithm="
                                                         f"{self.algorithm!r} (grid(...) needs "
                                                         "algorithm='grid')")
                if sampler == "grid" and not isinstance(value, Choice):
                    raise _spec.fail(field, type(value).__name__, "grid(...) or choice(...) "
                                     "with algorithm='grid' (a continuous range has no grid)")
            elif callable(value):
                raise _spec.fail(field, value, "a domain (uniform, choice, ...) or a constant")
        if not self.domains:
            raise _spec.fail("Experiment.space", dict(self.space),
                             "at least one domain to search (uniform, choice, grid, ...)")

    def _check_settings(self) -> None:
        _spec.mapping("Experiment.algorithm_settings", self.algorithm_settings)
        allowed = SETTINGS[self.algorithm]
        for key, value in self.algorithm_settings.items():
            field = f"Experiment.algorithm_settings[{key!r}]"
            if key not in allowed:
                raise _spec.fail(field, value, f"a setting of {self.algorithm!r}: one of "
                                               f"{sorted(allowed)}" if allowed else
                                 f"absent ({self.algorithm!r} takes no settings)")
            kind = allowed[key]
            if kind == "int":
                _spec.integer(field, value, minimum=1)
            elif kind == "float":
                _spec.number(field, value, minimum=0, strict=True)
            else:
                _spec.boolean(field, value)
        if self.algorithm == "pbt":
            for key in ("quantile_fraction", "resample_probability"):
                if key in self.algorithm_settings:
                    _spec.number(f"Experiment.algorithm_settings[{key!r}]",
                                 self.algorithm_settings[key], minimum=0, maximum=1)

    @property
    def domains(self) -> dict[str, Domain]:
        """The searched hyperparameters, by dotted name."""
        return {k: v for k, v in flatten(self.space).items() if isinstance(v, Domain)}

    @property
    def constants(self) -> dict[str, Any]:
        """The fixed entries of the space, by dotted name."""
        return {k: v for k, v in flatten(self.space).items() if not isinstance(v, Domain)}

    @property
    def grid_size(self) -> int:
        """The number of points of the grid (the product of the domains' value counts)."""
        size = 1
        for d in self.domains.values():
            size *= len(d.values) if isinstance(d, Choice) else 0
        return size

    @property
    def is_train_job(self) -> bool:
        from raymlp.train import TrainJob

        return isinstance(self.trial, TrainJob)

    def run(self, *, resume: bool | None = None, timeout_s: float | None = None):
        """Run the experiment to its end on Ray Tune (started or connected by ``raymlp.init``).

        An experiment of the same name that did not finish (the driver crashed, or
        ``max_trials`` grew) is continued: its finished trials are kept and taught to the
        searcher, trials that were running rerun.

        Args:
            resume: None (default): continue an unfinished experiment of this name, else start
                afresh; True: it must exist; False: start afresh, replacing its record.
            timeout_s: like ``time_budget_s``, for this call.

        Returns:
            ExperimentResult: the best trial (params, metrics, run id, model), all trials as a
            DataFrame, why the experiment ended.

        Raises:
            SpecError: the trial cannot be pickled; ``resume=True`` without a record.
            ResourceError: ``parallel_trials`` trials can never fit on the cluster at once.
            ExperimentError: more than ``max_failed_trials`` trials failed (it lists them).
        """
        from raymlp.tune import _run

        return _run.run(self, resume=resume, timeout_s=timeout_s)

