"""Search-space domains: what each hyperparameter may take, and their Optuna distributions.

A space is a (possibly nested) mapping of names to domains or constants. It is flattened into
dotted names for the searcher (``{"opt": {"lr": loguniform(...)}}`` -> ``"opt.lr"``) and the
sampled values are put back into the same nesting for the trial. Katib's ``parameters`` list
(``parameterType`` / ``feasibleSpace``) maps onto these one to one (:func:`from_katib`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from raymlp import _spec

__all__ = [
    "Choice",
    "Domain",
    "Float",
    "Grid",
    "Int",
    "choice",
    "flatten",
    "from_katib",
    "grid",
    "grid_points",
    "logint",
    "loguniform",
    "quniform",
    "randint",
    "unflatten",
    "uniform",
]


class Domain:
    """Base of the search-space domains (the values one hyperparameter may take)."""

    def distribution(self):  # pragma: no cover - every domain overrides it
        raise NotImplementedError

    def check(self, field: str) -> None:
        """Raise :class:`~raymlp.errors.SpecError` naming ``field`` on a bad domain."""


def _range(field: str, low: Any, high: Any, *, integer: bool = False,
           positive: bool = False) -> None:
    check = _spec.integer if integer else _spec.number
    check(f"{field}.low", low, minimum=0 if positive else None, **({} if integer else {
        "strict": positive}))
    if integer and positive and low < 1:
        raise _spec.fail(f"{field}.low", low, "an integer >= 1 (a log scale needs bounds > 0)")
    check(f"{field}.high", high)
    if high <= low:
        raise _spec.fail(f"{field}.high", high, f"a number > low={low} (an empty or inverted "
                                                "range)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Float(Domain):
    """A real number in ``[low, high]``; ``log`` samples on a log scale, ``step`` quantizes."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def check(self, field: str) -> None:
        _range(field, self.low, self.high, positive=self.log)
        _spec.number(f"{field}.step", self.step, minimum=0, strict=True, optional=True)
        if self.log and self.step is not None:
            raise _spec.fail(f"{field}.step", self.step, "None with a log scale")
        if self.step is not None and self.step > self.high - self.low:
            raise _spec.fail(f"{field}.step", self.step, f"at most high - low = "
                                                         f"{self.high - self.low:g}")

    def distribution(self):
        import optuna

        high = self.high
        if self.step is not None:  # Optuna wants high on the grid
            high = self.low + math.floor((self.high - self.low) / self.step + 1e-9) * self.step
        return optuna.distributions.FloatDistribution(self.low, high, log=self.log,
                                                      step=self.step)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Int(Domain):
    """An integer in ``[low, high]`` (both included), every ``step``; ``log`` on a log scale."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def check(self, field: str) -> None:
        _range(field, self.low, self.high, integer=True, positive=self.log)
        _spec.integer(f"{field}.step", self.step, minimum=1)
        if self.log and self.step != 1:
            raise _spec.fail(f"{field}.step", self.step, "1 with a log scale")

    def distribution(self):
        import optuna

        high = self.low + (self.high - self.low) // self.step * self.step
        return optuna.distributions.IntDistribution(self.low, high, log=self.log, step=self.step)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Choice(Domain):
    """One of ``values`` (categorical: no order between them)."""

    values: tuple

    def check(self, field: str) -> None:
        if not isinstance(self.values, tuple) or not self.values:
            raise _spec.fail(f"{field}.values", self.values, "a non-empty list of values")
        for v in self.values:
            if not (v is None or isinstance(v, (bool, int, float, str))):
                raise _spec.fail(f"{field}.values", v, "None, a bool, a number or a string")
        if len(set(map(repr, self.values))) != len(self.values):
            raise _spec.fail(f"{field}.values", list(self.values), "distinct values")

    def distribution(self):
        import optuna

        return optuna.distributions.CategoricalDistribution(self.values)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Grid(Choice):
    """Every one of ``values`` is tried (with the ``grid`` algorithm: the product of grids)."""


def uniform(low: float, high: float) -> Float:
    """A real number drawn uniformly from ``[low, high]``."""
    return Float(low=low, high=high)


def loguniform(low: float, high: float) -> Float:
    """A real number in ``[low, high]`` (both > 0) drawn uniformly on a log scale."""
    return Float(low=low, high=high, log=True)


def quniform(low: float, high: float, q: float) -> Float:
    """A real number in ``[low, high]`` on the grid ``low + k * q``."""
    return Float(low=low, high=high, step=q)


def randint(low: int, high: int, step: int = 1) -> Int:
    """An integer in ``[low, high]``, both included (Katib's ``int`` range), every ``step``."""
    return Int(low=low, high=high, step=step)


def logint(low: int, high: int) -> Int:
    """An integer in ``[low, high]`` (both >= 1) drawn on a log scale."""
    return Int(low=low, high=high, log=True)


def choice(values: Sequence[Any]) -> Choice:
    """One of ``values`` (categorical)."""
    return Choice(values=tuple(values) if isinstance(values, (list, tuple)) else values)


def grid(values: Sequence[Any]) -> Grid:
    """Every one of ``values`` is tried (the ``grid`` algorithm runs the product of grids)."""
    return Grid(values=tuple(values) if isinstance(values, (list, tuple)) else values)


# --- flat <-> nested ------------------------------------------------------------------------------

def flatten(space: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"opt": {"lr": d}}`` -> ``{"opt.lr": d}`` (domains and constants alike)."""
    out: dict[str, Any] = {}
    for key, value in space.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flatten`."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = out
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def grid_points(domains: Mapping[str, Domain]) -> list[dict[str, Any]]:
    """Every combination of the (finite) domains' values, in a fixed order."""
    names = sorted(domains)
    values = [domains[n].values for n in names]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


# --- Katib ----------------------------------------------------------------------------------------

_KATIB_TYPES = ("double", "int", "discrete", "categorical")
_KATIB_DISTRIBUTIONS = ("uniform", "logUniform")


def from_katib(parameters: Any, *, field: str = "parameters") -> dict[str, Any]:
    """Katib's ``parameters`` list as a space.

    ``double`` -> :func:`uniform` / :func:`loguniform` / :func:`quniform` (with ``step``),
    ``int`` -> :func:`randint` / :func:`logint`, ``discrete`` and ``categorical`` (a
    ``feasibleSpace.list``) -> :func:`choice`. A dotted ``name`` nests.
    """
    if not isinstance(parameters, list) or not parameters:
        raise _spec.fail(field, parameters, "a non-empty list of {name, parameterType, "
                                            "feasibleSpace}")
    space: dict[str, Any] = {}
    for i, p in enumerate(parameters):
        at = f"{field}[{i}]"
        _spec.mapping(at, p)
        unknown = sorted(set(p) - {"name", "parameterType", "feasibleSpace"})
        if unknown:
            raise _spec.fail(f"{at}.{unknown[0]}", p[unknown[0]],
                             "absent (allowed: name, parameterType, feasibleSpace)")
        name = _spec.string(f"{at}.name", p.get("name"))
        kind = _spec.choice(f"{at}.parameterType", p.get("parameterType"), _KATIB_TYPES)
        fs = _spec.mapping(f"{at}.feasibleSpace", p.get("feasibleSpace"))
        space[name] = _katib_domain(f"{at}.feasibleSpace", kind, fs)
    return unflatten(space)


def _katib_domain(at: str, kind: str, fs: Mapping[str, Any]) -> Domain:
    allowed = {"min", "max", "step", "list", "distribution"}
    unknown = sorted(set(fs) - allowed)
    if unknown:
        raise _spec.fail(f"{at}.{unknown[0]}", fs[unknown[0]], f"absent (allowed: "
                                                               f"{sorted(allowed)})")
    if kind in ("discrete", "categorical"):
        values = fs.get("list")
        if not isinstance(values, list) or not values:
            raise _spec.fail(f"{at}.list", values, "a non-empty list of values")
        if kind == "discrete":
            values = [_spec.number_text(f"{at}.list", v) for v in values]
        return choice(values)
    dist = _spec.choice(f"{at}.distribution", fs.get("distribution", "uniform"),
                        _KATIB_DISTRIBUTIONS)
    log = dist == "logUniform"
    low, high = fs.get("min"), fs.get("max")
    step = fs.get("step")
    if kind == "int":
        low = _spec.number_text(f"{at}.min", low, integer=True)
        high = _spec.number_text(f"{at}.max", high, integer=True)
        step = _spec.number_text(f"{at}.step", step, integer=True) if step is not None else 1
        return Int(low=low, high=high, step=step,
                   log=log)
    low, high = _spec.number_text(f"{at}.min", low), _spec.number_text(f"{at}.max", high)
    return Float(low=low, high=high, log=log,
                 step=_spec.number_text(f"{at}.step", step) if step is not None else None)
