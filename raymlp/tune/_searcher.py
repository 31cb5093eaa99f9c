"""The searcher: an Optuna study behind Ray Tune's ``Searcher`` interface.

Ray Tune asks for each new trial's config (:meth:`OptunaSearcher.suggest`) and tells how each
trial went; Optuna's samplers (TPE, GP, CMA-ES, QMC, random) propose the values. The study is
rebuilt from the experiment's journal of finished trials on resume (``Study.add_trial``), so the
searcher keeps what it learned without any pickle of its state. The ``grid`` algorithm hands out
the grid's points that have not run yet, in a fixed order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ray.tune.search import Searcher

from raymlp.tune._context import ERROR_KEY
from raymlp.tune._space import Domain, grid_points
from raymlp.tune._spec import Objective


def make_sampler(kind: str, seed: int | None, settings: Mapping[str, Any]):
    """The Optuna sampler for ``kind`` (a value of ``_spec.ALGORITHMS``)."""
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True,
            n_startup_trials=settings.get("n_startup_trials", 10))
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed,
                                         n_startup_trials=settings.get("n_startup_trials", 10))
    if kind == "cmaes":
        return optuna.samplers.CmaEsSampler(
            seed=seed, sigma0=settings.get("sigma0"),
            n_startup_trials=settings.get("n_startup_trials", 1), warn_independent_sampling=False)
    if kind == "sobol":
        return optuna.samplers.QMCSampler(qmc_type="sobol", seed=seed,
                                          scramble=settings.get("scramble", True),
                                          warn_independent_sampling=False)
    raise ValueError(f"no sampler {kind!r}")  # pragma: no cover - the spec checked it


def quiet_optuna() -> None:
    """Optuna's INFO lines ("A new study created") and experimental-feature warnings stay out
    of the console unless the engines' output was asked for."""
    import warnings

    import optuna

    from raymlp import _console

    if not _console.verbose():
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class OptunaSearcher(Searcher):
    """Proposes configs from an Optuna study; learns from each finished trial.

    Args:
        domains: the searched hyperparameters by dotted name.
        objective: the metric, goal and per-trial strategy.
        sampler: ``"grid"`` or a kind for :func:`make_sampler`.
        seed: the sampler's seed (shifted by the trials already finished on resume, so a resumed
            random search does not repeat the first draws).
        history: finished trials from the journal: ``{"params", "value", "status"}``.
        pending: params of trials that were running when the driver stopped: rerun first.
        settings: the algorithm's settings.
    """

    def __init__(self, domains: Mapping[str, Domain], objective: Objective, *, sampler: str,
                 seed: int | None, history: Sequence[Mapping[str, Any]] = (),
                 pending: Sequence[Mapping[str, Any]] = (),
                 settings: Mapping[str, Any] | None = None):
        import optuna

        quiet_optuna()
        super().__init__(metric=objective.metric, mode=objective.goal)
        self._objective = objective
        self._dists = {k: d.distribution() for k, d in domains.items()}
        self._live: dict[str, Any] = {}
        self._values: dict[str, float] = {}
        self._grid: list[dict[str, Any]] | None = None
        shifted = None if seed is None else seed + len(history)
        direction = "minimize" if objective.goal == "min" else "maximize"
        self.study = optuna.create_study(
            direction=direction,
            sampler=None if sampler == "grid" else make_sampler(sampler, shifted, settings or {}))
        for record in history:
            self._learn(record)
        if sampler == "grid":
            done = {_key(r["params"]) for r in history}
            self._grid = [p for p in grid_points(domains) if _key(p) not in done]
        for params in pending:
            if self._grid is None:
                self.study.enqueue_trial(dict(params), skip_if_exists=False)

    def _learn(self, record: Mapping[str, Any]) -> None:
        import optuna
        from optuna.trial import TrialState

        params = {k: v for k, v in record["params"].items() if k in self._dists}
        if set(params) != set(self._dists):
            return  # the space changed since: this trial says nothing about the new one
        try:
            value = record.get("value")
            ok = record.get("status") != "failed" and value is not None
            self.study.add_trial(optuna.trial.create_trial(
                params=params, distributions=self._dists,
                value=value if ok else None, state=TrialState.COMPLETE if ok else TrialState.FAIL))
        except ValueError:
            pass  # a value outside today's ranges: not taught

    @property
    def learned(self) -> int:
        """How many finished trials the study holds (from before a resume, and since)."""
        from optuna.trial import TrialState

        return len(self.study.get_trials(deepcopy=False,
                                         states=(TrialState.COMPLETE, TrialState.FAIL)))

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # fixed at construction

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self._grid is not None:
            if not self._grid:
                return Searcher.FINISHED
            return self._grid.pop(0)
        trial = self.study.ask(self._dists)
        self._live[trial_id] = trial
        return dict(trial.params)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self._objective.metric)
        if isinstance(value, (int, float)) and ERROR_KEY not in result:
            self._values[trial_id] = self._objective.fold(self._values.get(trial_id), value)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        from optuna.trial import TrialState

        trial = self._live.pop(trial_id, None)
        value = self._values.pop(trial_id, None)
        if trial is None:
            return
        failed = error or value is None or (result is not None and ERROR_KEY in result)
        if failed:
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self.study.tell(trial, value)


def _key(params: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))
