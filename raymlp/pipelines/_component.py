"""Components: typed Python functions that become pipeline steps, and running one step.

A component is still the function: called outside a pipeline it runs as it is (unit tests);
called while a :func:`~raymlp.pipelines.pipeline` is being built it adds a step and returns
the step's :class:`~raymlp.pipelines.Task`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import inspect
import textwrap
import time
import traceback
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from raymlp import _spec
from raymlp.errors import SpecError
from raymlp.pipelines import _types
from raymlp.pipelines._types import Artifact, PipelineTaskFinalStatus

__all__ = ["Component", "ComponentOptions", "StepContext", "component", "current_step",
           "execute", "log_metric"]

SINGLE_OUTPUT = "Output"  # KFP's name for a component's lone return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class ComponentOptions:
    """How a step runs: resources, retries, timeout and caching.

    Args:
        cpus: CPUs reserved for the step's Ray task (0: it only coordinates other Ray work,
            e.g. a training job with workers of its own).
        gpus: GPUs reserved (fractions allowed).
        memory: bytes of memory reserved (None: no reservation).
        retries: how many times a failed attempt is retried.
        backoff_s: the pause before the first retry; it doubles for each later one.
        timeout_s: an attempt running longer fails (and may be retried); None: no bound.
        cache: reuse the outputs of an identical earlier execution.
        max_age_s: a cache entry older than this is stale (None: never).
        cache_version: bump it to invalidate the cache without changing the code.
    """

    cpus: float = 1
    gpus: float = 0
    memory: int | None = None
    retries: int = 0
    backoff_s: float = 1.0
    timeout_s: float | None = None
    cache: bool = True
    max_age_s: float | None = None
    cache_version: str = ""

    def __post_init__(self) -> None:
        _spec.number("component.cpus", self.cpus, minimum=0)
        _spec.number("component.gpus", self.gpus, minimum=0)
        _spec.integer("component.memory", self.memory, minimum=1, optional=True)
        _spec.integer("component.retries", self.retries, minimum=0)
        _spec.number("component.backoff_s", self.backoff_s, minimum=0)
        _spec.number("component.timeout_s", self.timeout_s, minimum=0, strict=True, optional=True)
        _spec.boolean("component.cache", self.cache)
        _spec.number("component.max_age_s", self.max_age_s, minimum=0, optional=True)
        if not isinstance(self.cache_version, str):
            raise _spec.fail("component.cache_version", self.cache_version, "a string")


def _source(func: Callable) -> str:
    """The function's own source without its decorators (what the spec stores and hashes)."""
    try:
        text = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError) as exc:
        raise SpecError(f"component {func.__name__!r}: its source cannot be read ({exc}); define "
                        "it in a file", field=f"{func.__name__}", value=func,
                        allowed="a function defined in a module or script") from None
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith(("def ", "async def ")))
    return "\n".join(lines[start:]) + "\n"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Component:
    """A pipeline step made from a typed Python function (see :func:`component`).

    Attributes:
        name: the step name (the function's).
        func: the function itself.
        options: resources, retries, timeout, caching.
        inputs: ``{name: {"kind", "type", "default"?}}`` by the function's parameters.
        outputs: ``{name: {"kind", "type"}}``: the return value(s) and ``Output[...]`` artifacts.
        source: the function's source; ``code_hash`` hashes it with ``cache_version``.
    """

    def __init__(self, func: Callable, options: ComponentOptions, *, source: str | None = None):
        self.func = func
        self.name = func.__name__
        self.options = options
        self.source = source if source is not None else _source(func)
        self.code_hash = _digest(self.source + "\0" + options.cache_version)
        self.inputs, self.outputs = _signature(func)
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __repr__(self) -> str:
        return f"Component({self.name!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from raymlp.pipelines import _dsl

        builder = _dsl.current_builder()
        if builder is None:
            return self.func(*args, **kwargs)
        if args:
            raise SpecError(f"step {self.name!r}: pass inputs by keyword ({self.name}(x=...)), "
                            "as KFP does", field=self.name, value=args,
                            allowed="keyword arguments")
        return builder.add_task(self, kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "code_hash": self.code_hash,
                "options": dataclasses.asdict(self.options), "inputs": self.inputs,
                "outputs": self.outputs}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Component:
        """Rebuild a component from its compiled form (its source, executed on its own)."""
        namespace: dict[str, Any] = {}
        exec("from typing import *\nfrom raymlp.pipelines import *\n", namespace)  # noqa: S102
        exec(compile(data["source"], f"<component {data['name']}>", "exec"), namespace)  # noqa: S102
        func = namespace[data["name"]]
        return cls(func, ComponentOptions(**data["options"]), source=data["source"])


def _signature(func: Callable) -> tuple[dict, dict]:
    name = func.__name__
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:  # noqa: BLE001 - any failure to resolve them is the user's to fix
        raise SpecError(f"component {name!r}: its annotations cannot be resolved: {exc}",
                        field=name, value=None, allowed="annotations importable where it is "
                        "defined") from None
    inputs: dict[str, dict] = {}
    outputs: dict[str, dict] = {}
    for pname, param in inspect.signature(func).parameters.items():
        field = f"{name}.{pname}"
        if pname not in hints:
            raise SpecError(f"component {name!r}: input {pname!r} has no type annotation",
                            field=field, value=None, allowed="an annotated parameter")
        try:
            kind, tname, direction = _types.describe_type(hints[pname])
        except TypeError as exc:
            raise SpecError(f"component {name!r}: input {pname!r}: {exc}", field=field,
                            value=hints[pname], allowed="a component type") from None
        if direction == "Output":
            outputs[pname] = {"kind": "artifact", "type": tname}
            continue
        entry: dict[str, Any] = {"kind": kind, "type": tname}
        if param.default is not inspect.Parameter.empty:
            entry["default"] = param.default
        inputs[pname] = entry
    ret = hints.get("return", None)
    if ret is not None and ret is not type(None):
        if isinstance(ret, type) and issubclass(ret, tuple) and hasattr(ret, "_fields"):
            field_hints = typing.get_type_hints(ret)
            for fname in ret._fields:
                outputs[fname] = _return_type(name, fname, field_hints.get(fname, Any))
        else:
            outputs[SINGLE_OUTPUT] = _return_type(name, SINGLE_OUTPUT, ret)
    return inputs, outputs


def _return_type(component: str, output: str, hint: Any) -> dict:
    try:
        kind, tname, _ = _types.describe_type(hint)
    except TypeError as exc:
        raise SpecError(f"component {component!r}: output {output!r}: {exc}",
                        field=f"{component}.{output}", value=hint,
                        allowed="a parameter type") from None
    if kind != "param":
        raise SpecError(f"component {component!r}: output {output!r} must be a parameter type "
                        "(return artifacts through Output[...] inputs)",
                        field=f"{component}.{output}", value=hint, allowed="a parameter type")
    return {"kind": "param", "type": tname}


def component(func: Callable | None = None, *, cpus: float = 1, gpus: float = 0,
              memory: int | None = None, retries: int = 0, backoff_s: float = 1.0,
              timeout_s: float | None = None, cache: bool = True, max_age_s: float | None = None,
              cache_version: str = ""):
    """Turn a typed Python function into a pipeline step (KFP's ``@dsl.component``).

    Inputs are parameters (``str``, ``int``, ``float``, ``bool``, ``list``, ``dict``) and
    artifacts (``Input[Dataset]``); outputs are the return value (``task.output``), a
    ``NamedTuple`` of values (``task.outputs["name"]``), or ``Output[Model]`` artifacts the
    function writes at ``.path``. The function must be self-contained (imports inside it) so a
    compiled pipeline can run it without its module.

    Args:
        cpus, gpus, memory, retries, backoff_s, timeout_s, cache, max_age_s, cache_version:
            see :class:`ComponentOptions`.

    Example:
        >>> @component(cpus=1, retries=2, max_age_s=7 * 24 * 3600)
        ... def preprocess(test_size: float, data: Output[Dataset]) -> int:
        ...     ...
    """
    options = ComponentOptions(cpus=cpus, gpus=gpus, memory=memory, retries=retries,
                               backoff_s=backoff_s, timeout_s=timeout_s, cache=cache,
                               max_age_s=max_age_s, cache_version=cache_version)

    def wrap(f: Callable) -> Component:
        if not callable(f):
            raise _spec.fail("component", f, "a function")
        return Component(f, options)

    return wrap(func) if func is not None else wrap


# --- inside a step --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StepContext:
    """What a running step knows about itself (:func:`current_step`).

    Attributes:
        run_id: the pipeline run's id.
        pipeline: the pipeline's name; ``version`` its spec hash.
        step: this step's name (``"train"``, ``"square[3]"``).
        attempt: 1 for the first attempt, 2 for the first retry, ...
        mlflow_run_id: the pipeline run's MLflow run (nest a training job's run under it).
        input_digests: content digests of the step's input artifacts, by input name.
    """

    run_id: str
    pipeline: str
    version: str
    step: str
    attempt: int
    mlflow_run_id: str | None
    input_digests: Mapping[str, str]

    def lineage_tags(self) -> dict[str, str]:
        """Tags that tie a model version (or anything else) to this step and its input data."""
        tags = {"raymlp.pipeline.run_id": self.run_id, "raymlp.pipeline.name": self.pipeline,
                "raymlp.pipeline.version": self.version, "raymlp.pipeline.step": self.step}
        if self.mlflow_run_id:
            tags["raymlp.pipeline.mlflow_run_id"] = self.mlflow_run_id
        tags.update({f"raymlp.dataset.{k}": v for k, v in self.input_digests.items()})
        return tags


_current: contextvars.ContextVar[tuple[StepContext, dict] | None] = contextvars.ContextVar(
    "raymlp_pipeline_step", default=None)


def current_step() -> StepContext | None:
    """The running step's context, or None outside a pipeline step."""
    got = _current.get()
    return got[0] if got else None


def log_metric(name: str, value: float) -> None:
    """Record a metric of the running step (its MLflow run gets it). Outside a step: no-op."""
    got = _current.get()
    if got is not None:
        got[1][name] = float(value)


def execute(func: Callable, *, ctx: StepContext, params: Mapping[str, Any],
            artifacts_in: Mapping[str, Mapping[str, Any]],
            artifacts_out: Mapping[str, Mapping[str, Any]], outputs: Mapping[str, Mapping],
            log_path: str | None) -> dict[str, Any]:
    """Run one attempt of a step (in a Ray worker or in-process) and describe what it made.

    The step's own prints go to its log file (the console shows the pipeline's progress, the
    log keeps the step's, with the traceback of a failed attempt).

    Returns:
        dict: ``values`` (output name -> value), ``artifacts`` (name -> uri, type, metadata,
        digest), ``metrics``, ``duration_s``.
    """
    from raymlp.tracking import data_hash

    kwargs = dict(params)
    for name, art in artifacts_in.items():
        kwargs[name] = _types.artifact_class(art["type"])(art.get("name", name), art["uri"],
                                                         art.get("metadata"))
    made: dict[str, Artifact] = {}
    for name, art in artifacts_out.items():
        obj = _types.artifact_class(art["type"])(name, art["uri"])
        Path(obj.path).parent.mkdir(parents=True, exist_ok=True)
        made[name] = kwargs[name] = obj
    metrics: dict[str, float] = {}
    token = _current.set((ctx, metrics))
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if log_path:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            log = stack.enter_context(open(log_path, "a", buffering=1))
            stack.enter_context(contextlib.redirect_stdout(log))
            stack.enter_context(contextlib.redirect_stderr(log))
        try:
            result = func(**kwargs)
        except BaseException:
            if log_path:
                traceback.print_exc()
            raise
        finally:
            _current.reset(token)
    duration = time.perf_counter() - start
    values: dict[str, Any] = {}
    value_names = [n for n, o in outputs.items() if o["kind"] == "param"]
    if value_names == [SINGLE_OUTPUT]:
        values[SINGLE_OUTPUT] = result
    elif value_names:
        if isinstance(result, Mapping):
            values.update({name: result[name] for name in value_names})
        elif isinstance(result, tuple) and len(result) == len(value_names):
            values.update(zip(value_names, result, strict=True))  # a NamedTuple or a plain tuple
        else:
            raise TypeError(f"step returned {result!r}; it declares outputs {value_names}")
    arts = {}
    for name, obj in made.items():
        path = Path(obj.path)
        digest = data_hash(path) if path.exists() else ""
        if isinstance(obj, _types.Metrics):
            metrics.update({k: float(v) for k, v in obj.metadata.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
        arts[name] = {"type": type(obj).__name__, "name": name, "uri": obj.uri,
                      "metadata": obj.metadata, "digest": digest}
    return {"values": values, "artifacts": arts, "metrics": metrics, "duration_s": duration}


def final_status_value(data: Mapping[str, Any]) -> PipelineTaskFinalStatus:
    return PipelineTaskFinalStatus(state=data["state"], pipeline_run_id=data["pipeline_run_id"],
                                   error_message=data.get("error_message", ""),
                                   failed_tasks=tuple(data.get("failed_tasks", ())))
