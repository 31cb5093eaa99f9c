"""What a finished experiment left behind: :class:`ExperimentResult` and its :class:`Trial` s."""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Mapping
from typing import Any

from raymlp.errors import JobError


@dataclasses.dataclass(frozen=True)
class Trial:
    """One finished trial.

    Attributes:
        trial_id: Ray Tune's id of the trial.
        number: its order in the experiment (0, 1, ...).
        params: the sampled hyperparameters, by dotted name.
        status: ``"completed"``, ``"stopped"`` (early stopping, or the experiment ended) or
            ``"failed"``.
        value: the objective's value (by its strategy over the trial's reports).
        metrics: the last reported value of each metric.
        steps: how many steps (reports) the trial made.
        error: why it failed.
        run_id: the trial's MLflow run (nested under the experiment's).
        model_uri: the model the trial logged, or None.
        checkpoint: the path of its latest checkpoint, or None.
        duration_s: wall time from start to end.
        retries: how often its process died and it was restarted.
    """

    trial_id: str
    number: int
    params: dict
    status: str
    value: float | None
    metrics: dict
    steps: int
    error: str | None = None
    run_id: str | None = None
    model_uri: str | None = None
    checkpoint: str | None = None
    duration_s: float = 0.0
    retries: int = 0
    experiment: str | None = None

    @classmethod
    def from_record(cls, r: Mapping[str, Any], metric: str, experiment: str | None = None
                    ) -> Trial:
        return cls(trial_id=r["trial_id"], number=int(r.get("number", 0)),
                   params=dict(r.get("params") or {}), status=r.get("status", "completed"),
                   value=r.get("value"), metrics=dict(r.get("metrics") or {}),
                   steps=int(r.get("steps") or 0), error=r.get("error"), run_id=r.get("run_id"),
                   model_uri=r.get("model_uri"), checkpoint=r.get("checkpoint"),
                   duration_s=float(r.get("duration_s") or 0.0),
                   retries=int(r.get("retries") or 0), experiment=experiment)

    def register(self, name: str, alias: str | None = None, *,
                 tags: Mapping[str, Any] | None = None):
        """Register the trial's model as a new version of ``name`` (and point ``alias`` at it).

        The version's lineage holds the experiment, the trial's run and the data hash.

        Raises:
            JobError: the trial logged no model (call ``ctx.log_model`` in the trial).
        """
        from raymlp import tracking

        if not self.model_uri:
            raise JobError(f"trial {self.number} logged no model: call ctx.log_model(model, "
                           "input_example, flavor=...) at the end of the trial (a TrainJob "
                           "trial: ctx.log_model in its loop)", run_id=self.run_id)
        lineage = {"raymlp.tune.trial_id": self.trial_id,
                   **({"raymlp.tune.experiment": self.experiment} if self.experiment else {})}
        return tracking.register_model(self.model_uri, name, alias=alias,
                                       tags={**lineage, **dict(tags or {})})

    def load_model(self, flavor: str = "pyfunc"):
        """Load the trial's model (``"pyfunc"`` by default, or its native flavor)."""
        from raymlp import tracking

        if not self.model_uri:
            raise JobError(f"trial {self.number} logged no model", run_id=self.run_id)
        return tracking.load_model(self.model_uri, flavor=flavor)


@dataclasses.dataclass(frozen=True)
class ExperimentResult:
    """What a finished experiment left behind.

    Attributes:
        name: the experiment's name.
        best: the best trial (None when every trial failed).
        trials: every finished trial as a pandas DataFrame (one row each: number, status,
            value, ``param.*``, ``metric.*``, steps, run id, error).
        stop_reason: why the experiment ended (``"target val_loss<=0.05 reached by trial 7"``,
            ``"max_trials=50 trials finished"``, a time budget).
        run_id: the experiment's MLflow parent run.
        objective: the objective it optimized.

    Example:
        >>> result = exp.run()
        >>> result.best.params, result.best.metrics["val_loss"]
        >>> result.best.register("digits", alias="champion")
        >>> result.trials.sort_values("value").head()
    """

    name: str
    best: Trial | None
    trials: Any
    stop_reason: str
    run_id: str
    objective: Any
    all_trials: list = dataclasses.field(default_factory=list, repr=False)
    experiment: str | None = None
    searcher_trials: int | None = None

    @property
    def best_params(self) -> dict:
        return dict(self.best.params) if self.best else {}

    @property
    def best_metrics(self) -> dict:
        return dict(self.best.metrics) if self.best else {}

    def summary_fields(self) -> dict[str, Any]:
        from raymlp import _console

        b = self.best
        counts = {s: sum(t.status == s for t in self.all_trials)
                  for s in ("completed", "stopped", "failed")}
        return {"parent run id": self.run_id, "trials": ", ".join(
                    f"{n} {s}" for s, n in counts.items() if n) or "none",
                "ended": self.stop_reason,
                "best value": None if b is None else b.value,
                "best params": None if b is None else b.params,
                "best run id": None if b is None else b.run_id,
                "best model": None if b is None else b.model_uri,
                **_console.where_to_look()}

    def plot_history(self):
        """The optimization history (each trial's value, and the best so far), matplotlib."""
        import matplotlib.pyplot as plt

        ts = sorted((t for t in self.all_trials if t.value is not None), key=lambda t: t.number)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        xs = [t.number for t in ts]
        ys = [t.value for t in ts]
        best, run = [], None
        for y in ys:
            run = y if run is None or self.objective.better(y, run) else run
            best.append(run)
        ax.scatter(xs, ys, s=14, label="trial")
        ax.step(xs, best, where="post", color="C1", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(self.objective.metric)
        ax.set_title(f"{self.name}: optimization history")
        ax.legend()
        fig.tight_layout()
        return fig

    def param_importances(self) -> dict[str, float]:
        """Each hyperparameter's importance for the objective (Optuna's fANOVA evaluator)."""
        import optuna
        from optuna.trial import TrialState

        ts = [t for t in self.all_trials if t.value is not None and t.status != "failed"]
        if len(ts) < 2:
            return {}
        dists = _distributions(ts)
        study = optuna.create_study(direction="minimize" if self.objective.goal == "min"
                                    else "maximize")
        for t in ts:
            params = {k: v if isinstance(dists[k], optuna.distributions.FloatDistribution)
                      else repr(v) for k, v in t.params.items()}
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                      value=t.value, state=TrialState.COMPLETE))
        return optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))

    def plot_importances(self):
        """A bar chart of :meth:`param_importances` (matplotlib)."""
        import matplotlib.pyplot as plt

        imp = self.param_importances()
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * max(1, len(imp))))
        ax.barh(list(imp)[::-1], list(imp.values())[::-1])
        ax.set_xlabel("importance")
        ax.set_title(f"{self.name}: parameter importances")
        fig.tight_layout()
        return fig

    def _repr_html_(self) -> str:
        b = self.best
        head = (f"<b>ExperimentResult</b> {html.escape(self.name)}: {len(self.all_trials)} "
                f"trials, ended: {html.escape(self.stop_reason)}")
        if b is None:
            return head
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                       for k, v in {**b.params, "value": b.value, "run id": b.run_id}.items())
        return f"{head}<br>best trial {b.number}<table>{rows}</table>"


def _distributions(trials: list[Trial]) -> dict:
    """Optuna distributions that hold every trial's params (for importance evaluation)."""
    import optuna

    out = {}
    keys = sorted({k for t in trials for k in t.params})
    for k in keys:
        values = [t.params.get(k) for t in trials]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            lo, hi = min(values), max(values)
            out[k] = optuna.distributions.FloatDistribution(lo, hi if hi > lo else lo + 1e-12)
        else:
            out[k] = optuna.distributions.CategoricalDistribution(sorted(set(map(repr, values))))
    return out


def trials_frame(trials: list[Trial]):
    """Every trial as one row of a pandas DataFrame."""
    import pandas as pd

    rows = []
    for t in trials:
        row = {"number": t.number, "trial_id": t.trial_id, "status": t.status, "value": t.value,
               "steps": t.steps, "run_id": t.run_id, "duration_s": t.duration_s,
               "retries": t.retries, "error": t.error}
        row.update({f"param.{k}": v for k, v in t.params.items()})
        row.update({f"metric.{k}": v for k, v in t.metrics.items()})
        rows.append(row)
    return pd.DataFrame(rows)
