"""Typed artifacts (``Dataset``, ``Model``, ``Metrics``, ...), the ``Input`` / ``Output``
annotations that pass them, the final status an exit handler sees, and the parameter types a
component may take."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Annotated, Any

__all__ = [
    "HTML",
    "PARAM_TYPES",
    "Artifact",
    "Dataset",
    "Input",
    "Markdown",
    "Metrics",
    "Model",
    "Output",
    "PipelineTaskFinalStatus",
    "artifact_class",
    "describe_type",
]

# Parameter types a component input or output may have (KFP's), by the name the spec records.
PARAM_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool,
                                "list": list, "dict": dict}


class Artifact:
    """A file or directory a step writes or reads, under the configured artifact root.

    Attributes:
        name: the output's name in the step that made it.
        uri: where it lives (a path or URL); identical to ``path`` on a local artifact root.
        path: the local path a step reads or writes.
        metadata: small JSON-able facts about it (recorded with the run and the cache).
    """

    type_name = "system.Artifact"

    def __init__(self, name: str = "", uri: str = "", metadata: dict | None = None):
        self.name = name
        self.uri = uri
        self.metadata: dict[str, Any] = dict(metadata or {})

    @property
    def path(self) -> str:
        return self.uri.removeprefix("file://")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, uri={self.uri!r})"

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "name": self.name, "uri": self.uri,
                "metadata": self.metadata}


class Dataset(Artifact):
    """Data: a file (CSV, Parquet, ...) or a directory."""

    type_name = "system.Dataset"


class Model(Artifact):
    """A model: a file or directory, or a pointer to an MLflow model in ``metadata``."""

    type_name = "system.Model"


class HTML(Artifact):
    """An HTML page (a report)."""

    type_name = "system.HTML"


class Markdown(Artifact):
    """A Markdown document."""

    type_name = "system.Markdown"


class Metrics(Artifact):
    """Scalar metrics of a step: :meth:`log_metric` records each one; the step's MLflow run
    gets them as metrics and downstream steps read them from ``metadata``."""

    type_name = "system.Metrics"

    def log_metric(self, name: str, value: float) -> None:
        """Record metric ``name`` (and write the metrics file at :attr:`path`)."""
        self.metadata[name] = float(value)
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.metadata, sort_keys=True))


_ARTIFACTS = {c.__name__: c for c in (Artifact, Dataset, Model, HTML, Markdown, Metrics)}


def artifact_class(name: str) -> type[Artifact]:
    """The artifact class called ``name`` (``"Dataset"``)."""
    return _ARTIFACTS[name]


class _Direction:
    def __init__(self, direction: str):
        self.direction = direction

    def __repr__(self) -> str:
        return self.direction


INPUT = _Direction("Input")
OUTPUT = _Direction("Output")


class Input:
    """``Input[Dataset]``: a component input that is an artifact another step wrote."""

    def __class_getitem__(cls, item: type[Artifact]):
        return Annotated[item, INPUT]


class Output:
    """``Output[Model]``: an artifact the component writes at ``.path`` (an output of the step)."""

    def __class_getitem__(cls, item: type[Artifact]):
        return Annotated[item, OUTPUT]


@dataclasses.dataclass(frozen=True)
class PipelineTaskFinalStatus:
    """What an :class:`~raymlp.pipelines.ExitHandler`'s exit step sees: annotate a component
    input with this type and the runner fills it in.

    Attributes:
        state: ``"SUCCEEDED"`` or ``"FAILED"``.
        pipeline_run_id: the run's id.
        error_message: the first failure, naming the step, or "".
        failed_tasks: the steps that failed.
    """

    state: str
    pipeline_run_id: str
    error_message: str = ""
    failed_tasks: tuple[str, ...] = ()


def describe_type(hint: Any) -> tuple[str, str, str | None]:
    """``(kind, type name, direction)`` of an annotation: kind ``"param"``, ``"artifact"`` or
    ``"status"``; direction ``"Input"``/``"Output"`` for artifacts.

    Raises:
        TypeError: a type a component cannot take (the caller names the field).
    """
    if typing.get_origin(hint) is Annotated:
        base, *extras = typing.get_args(hint)
        direction = next((e.direction for e in extras if isinstance(e, _Direction)), None)
        if direction and isinstance(base, type) and issubclass(base, Artifact):
            return "artifact", base.__name__, direction
        hint = base
    if hint is PipelineTaskFinalStatus:
        return "status", "PipelineTaskFinalStatus", None
    if isinstance(hint, type) and issubclass(hint, Artifact):
        raise TypeError(f"an artifact is passed as Input[{hint.__name__}] or "
                        f"Output[{hint.__name__}]")
    origin = typing.get_origin(hint) or hint
    if origin is typing.Any:
        return "param", "any", None
    for name, cls in PARAM_TYPES.items():
        if origin is cls:
            return "param", name, None
    raise TypeError(f"{hint!r} is not a component type (allowed: {', '.join(PARAM_TYPES)}, "
                    "Input[...] / Output[...] artifacts)")


def compatible(produced: str, wanted: str) -> bool:
    """Whether an output of type ``produced`` may feed an input of type ``wanted``."""
    if "any" in (produced, wanted) or produced == wanted:
        return True
    if produced == "int" and wanted == "float":
        return True
    return wanted == "Artifact" and produced in _ARTIFACTS


def check_value(type_name: str, value: Any) -> bool:
    """Whether a plain value fits parameter type ``type_name``."""
    if type_name == "any":
        return True
    if type_name == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, PARAM_TYPES[type_name])
