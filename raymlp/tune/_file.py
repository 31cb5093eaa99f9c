"""Experiment files: Katib's field names, read into an :class:`~raymlp.tune.Experiment`.

A file holds Katib's ``objective``, ``algorithm``, ``earlyStopping``, ``parameters``,
``parallelTrialCount``, ``maxTrialCount`` and ``maxFailedTrialCount``, with ``trial:
module:function`` in place of Katib's trial template; raymlp's own settings keep their Python
names (``seed``, ``constants``, ``time_budget_s``, ...). A whole Katib ``Experiment`` manifest
(``apiVersion`` / ``kind`` / ``metadata`` / ``spec``) is read too: its ``metadata.name`` and
``spec``. Every field is checked like the Python spec, and an error names the file's field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from raymlp import _spec
from raymlp._util import load_object, parse_value, reference
from raymlp.tune._space import Choice, Float, Int, flatten, from_katib, unflatten
from raymlp.tune._spec import EarlyStopping, Experiment, Objective

# Katib's names of the early-stopping algorithms raymlp has.
_EARLY = {"medianstop": "median", "median": "median", "asha": "asha", "hyperband": "hyperband"}
_TYPES = {"minimize": "min", "maximize": "max"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class NameValue:
    """One of Katib's ``{name, value}`` settings (values may be strings: ``"3"``)."""

    name: str
    value: Any = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileObjective:
    """Katib's ``objective``."""

    objectiveMetricName: str
    type: str = "minimize"
    goal: float | None = None
    additionalMetricNames: list[str] = dataclasses.field(default_factory=list)
    metricStrategies: list[dict] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        _spec.choice("objective.type", self.type, list(_TYPES))


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileAlgorithm:
    """Katib's ``algorithm`` / ``earlyStopping``: a name and ``{name, value}`` settings."""

    algorithmName: str
    algorithmSettings: list[dict] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExperimentFile:
    """An experiment file (see the module docstring); :meth:`experiment` builds the spec."""

    name: str
    trial: str
    objective: FileObjective
    parameters: list[dict]
    algorithm: FileAlgorithm | None = None
    earlyStopping: FileAlgorithm | None = None
    parallelTrialCount: int = 1
    maxTrialCount: int | None = None
    maxFailedTrialCount: int | None = None
    seed: int | None = None
    constants: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_retries: int = 1
    time_budget_s: float | None = None
    cpus: float = 1
    gpus: float = 0
    experiment: str | None = None
    storage: str | None = None
    data_hash: str | None = None
    tags: dict[str, Any] = dataclasses.field(default_factory=dict)

    def experiment_spec(self, *, load: bool = True) -> Experiment:
        """The :class:`Experiment` this file describes (``load``: import the trial)."""
        o = self.objective
        strategy = "latest"
        for i, s in enumerate(o.metricStrategies):
            _spec.mapping(f"objective.metricStrategies[{i}]", s)
            if s.get("name") == o.objectiveMetricName:
                strategy = _spec.choice(f"objective.metricStrategies[{i}].value", s.get("value"),
                                        ["latest", "min", "max"])
        objective = Objective(metric=o.objectiveMetricName, goal=_TYPES[o.type],
                              target=_spec.number_text("objective.goal", o.goal, optional=True),
                              strategy=strategy, additional_metrics=tuple(o.additionalMetricNames))
        algorithm = "bayesian"
        settings: dict[str, Any] = {}
        if self.algorithm is not None:
            algorithm = self.algorithm.algorithmName
            settings = _settings("algorithm.algorithmSettings", self.algorithm.algorithmSettings)
        early = None
        if self.earlyStopping is not None:
            name = _spec.choice("earlyStopping.algorithmName",
                                self.earlyStopping.algorithmName, list(_EARLY))
            es_settings = _settings("earlyStopping.algorithmSettings",
                                    self.earlyStopping.algorithmSettings)
            fields = {f.name for f in dataclasses.fields(EarlyStopping)} - {"algorithm"}
            for key in es_settings:
                if key not in fields:
                    raise _spec.fail(f"earlyStopping.algorithmSettings[{key!r}]", es_settings[key],
                                     f"one of {sorted(fields)}")
            early = EarlyStopping(algorithm=_EARLY[name], **es_settings)
        trial = load_object(self.trial, field="trial") if load else _unloaded
        space = unflatten({**flatten(self.constants), **flatten(from_katib(self.parameters))})
        return Experiment(
            trial=trial, space=space, objective=objective, name=self.name, algorithm=algorithm,
            algorithm_settings=settings, early_stopping=early, seed=self.seed,
            max_trials=self.maxTrialCount, parallel_trials=self.parallelTrialCount,
            max_failed_trials=self.maxFailedTrialCount, max_retries=self.max_retries,
            time_budget_s=self.time_budget_s, cpus=self.cpus, gpus=self.gpus,
            experiment=self.experiment, storage=self.storage, data_hash=self.data_hash,
            tags=self.tags)


def _unloaded(ctx):  # pragma: no cover - a stand-in while only checking a file
    raise RuntimeError("not loaded")


def _settings(field: str, items: Any) -> dict[str, Any]:
    """Katib's ``[{name, value}]`` settings as a mapping, with ``"3"`` read as 3."""
    if isinstance(items, Mapping):
        items = [{"name": k, "value": v} for k, v in items.items()]
    if not isinstance(items, list):
        raise _spec.fail(field, items, "a list of {name, value}")
    out = {}
    for i, item in enumerate(items):
        nv = _spec.from_data(NameValue, item, field=f"{field}[{i}]")
        out[nv.name] = parse_value(nv.value) if isinstance(nv.value, str) else nv.value
    return out


def read(data: Any, *, load: bool = True) -> Experiment:
    """An :class:`Experiment` from an experiment file's data (a mapping read from YAML).

    Raises:
        SpecError: naming the file's field (``objective.objectiveMetricName``, ...).
    """
    if isinstance(data, Mapping) and "spec" in data and isinstance(data.get("spec"), Mapping):
        # A Katib Experiment manifest: its name and spec.
        meta = data.get("metadata") or {}
        data = {"name": meta.get("name"), **data["spec"]} if meta.get("name") else dict(
            data["spec"])
        data.pop("trialTemplate", None)
    spec = _spec.from_data(ExperimentFile, data, field="experiment")
    return spec.experiment_spec(load=load)


def to_file_data(exp: Experiment) -> dict[str, Any]:
    """An experiment file's data for ``exp`` (what :func:`read` takes back).

    Raises:
        TypeError: the trial is a TrainJob or has no importable name.
    """
    if exp.is_train_job:
        raise TypeError("a TrainJob trial cannot be written to an experiment file")
    ref = reference(exp.trial)
    if "<" in ref:  # a lambda or a nested function
        raise TypeError(f"the trial {ref} has no importable name")
    o = exp.objective
    params = []
    for name, d in exp.domains.items():
        if isinstance(d, Choice):
            params.append({"name": name, "parameterType": "categorical",
                           "feasibleSpace": {"list": list(d.values)}})
        elif isinstance(d, Int):
            fs = {"min": d.low, "max": d.high, **({"step": d.step} if d.step != 1 else {})}
            if d.log:
                fs["distribution"] = "logUniform"
            params.append({"name": name, "parameterType": "int", "feasibleSpace": fs})
        elif isinstance(d, Float):
            fs = {"min": d.low, "max": d.high, **({"step": d.step} if d.step else {})}
            if d.log:
                fs["distribution"] = "logUniform"
            params.append({"name": name, "parameterType": "double", "feasibleSpace": fs})
    es = exp.early_stopping
    out = {
        "name": exp.name, "trial": ref,
        "objective": {"objectiveMetricName": o.metric, "type": f"{o.goal}imize",
                      "goal": o.target, "additionalMetricNames": list(o.additional_metrics),
                      "metricStrategies": [{"name": o.metric, "value": o.strategy}]},
        "parameters": params,
        "algorithm": {"algorithmName": exp.algorithm, "algorithmSettings": [
            {"name": k, "value": v} for k, v in exp.algorithm_settings.items()]},
        "earlyStopping": None if es is None else {
            "algorithmName": es.algorithm, "algorithmSettings": [
                {"name": f.name, "value": getattr(es, f.name)}
                for f in dataclasses.fields(es) if f.name != "algorithm"]},
        "parallelTrialCount": exp.parallel_trials, "maxTrialCount": exp.max_trials,
        "maxFailedTrialCount": exp.max_failed_trials, "seed": exp.seed,
        "constants": dict(exp.constants), "max_retries": exp.max_retries,
        "time_budget_s": exp.time_budget_s, "cpus": exp.cpus, "gpus": exp.gpus,
        "experiment": exp.experiment, "storage": exp.storage, "data_hash": exp.data_hash,
        "tags": dict(exp.tags),
    }
    return out
