"""The one registry of model flavors: raymlp's names, MLflow's names, modules and requirements."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable

from raymlp import _spec

__all__ = ["FLAVORS", "Flavor", "flavor", "native_flavor"]


@dataclasses.dataclass(frozen=True)
class Flavor:
    """A model flavor as raymlp and MLflow know it.

    Attributes:
        name: raymlp's name (``"torch"``, ``"tensorflow"``, ``"xgboost"``, ``"sklearn"``,
            ``"pyfunc"``).
        mlflow_name: the flavor's key in an MLmodel file (``"pytorch"``, ...,
            ``"python_function"``).
        module_name: the MLflow module that saves and loads it (``"mlflow.pytorch"``).
        packages: the distributions its models need besides MLflow.

    Example:
        >>> flavor("pytorch").module().__name__
        'mlflow.pytorch'
    """

    name: str
    mlflow_name: str
    module_name: str
    packages: tuple[str, ...]

    def module(self):
        """The ``mlflow.<flavor>`` module (imported on first use: it imports the framework)."""
        return importlib.import_module(self.module_name)

    def requirements(self) -> list[str]:
        """Pinned pip requirements of this flavor's models, from what is installed here.

        Given to MLflow explicitly so it skips inferring them (which imports the model in a
        subprocess and takes seconds).
        """
        from importlib.metadata import PackageNotFoundError, version

        reqs = []
        for dist in ("mlflow", *self.packages):
            try:
                reqs.append(f"{dist}=={version(dist).split('+')[0]}")
            except PackageNotFoundError:
                continue
        return reqs


_REGISTRY = {
    f.name: f for f in (
        Flavor("torch", "pytorch", "mlflow.pytorch", ("torch", "cloudpickle")),
        Flavor("tensorflow", "tensorflow", "mlflow.tensorflow", ("tensorflow", "keras")),
        Flavor("xgboost", "xgboost", "mlflow.xgboost", ("xgboost", "scikit-learn")),
        Flavor("sklearn", "sklearn", "mlflow.sklearn", ("scikit-learn", "cloudpickle")),
        Flavor("pyfunc", "python_function", "mlflow.pyfunc", ("cloudpickle",)),
    )
}
_ALIASES = {"pytorch": "torch", "keras": "tensorflow", "python_function": "pyfunc"}

#: raymlp's flavor names.
FLAVORS: tuple[str, ...] = tuple(_REGISTRY)

# Flavors a served or loaded model is called through natively, in order of preference. A
# TensorFlow model goes through pyfunc: its SavedModel signature runs without Keras's
# per-call progress output.
_NATIVE = ("torch", "xgboost", "sklearn")


def flavor(name: str, *, field: str = "flavor") -> Flavor:
    """The flavor called ``name`` (raymlp's name or an alias: ``"pytorch"``, ``"keras"``).

    Raises:
        SpecError: an unknown name; the error lists the allowed ones.
    """
    key = _ALIASES.get(name, name) if isinstance(name, str) else None
    if key not in _REGISTRY:
        aliases = ", ".join(f"{a!r} for {n!r}" for a, n in _ALIASES.items())
        raise _spec.fail(field, name, f"one of {list(FLAVORS)} (or an alias: {aliases})")
    return _REGISTRY[key]


def native_flavor(mlflow_flavors: Iterable[str]) -> str:
    """The raymlp flavor to load a saved model with, from its MLmodel's flavor keys.

    ``"pyfunc"`` when the model has no flavor raymlp calls natively.

    Example:
        >>> native_flavor(["python_function", "pytorch"])
        'torch'
    """
    keys = set(mlflow_flavors)
    for name in _NATIVE:
        if _REGISTRY[name].mlflow_name in keys:
            return name
    return "pyfunc"
