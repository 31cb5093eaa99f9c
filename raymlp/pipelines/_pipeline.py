"""Pipelines (spec -> action -> handle): :func:`pipeline` builds and checks the graph,
:meth:`Pipeline.run` runs it, :class:`PipelineRun` is the outcome; :func:`compile` /
:func:`load` write and read the portable spec (pydantic serializes it); :func:`resume` continues
a failed or killed run."""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pydantic

from raymlp import _spec
from raymlp.errors import PipelineError, SpecError
from raymlp.pipelines import _store, _types
from raymlp.pipelines._component import Component
from raymlp.pipelines._dsl import build_graph, current_builder, inline

__all__ = [
    "Pipeline",
    "PipelineRun",
    "PipelineSpec",
    "StepStatus",
    "compile",
    "get_run",
    "list_runs",
    "load",
    "pipeline",
    "resume",
]

MODES = ("ray", "local")


class PipelineSpec(pydantic.BaseModel):
    """The compiled, portable form of a pipeline: its graph, the components' sources and
    hashes, and its parameters. ``version`` is the content hash of everything else."""

    model_config = pydantic.ConfigDict(extra="forbid")

    name: str
    version: str = ""
    reference: str | None = None
    params: dict[str, dict[str, Any]]
    components: dict[str, dict[str, Any]]
    tasks: dict[str, dict[str, Any]]
    groups: dict[str, dict[str, Any]]
    outputs: dict[str, dict[str, Any]] = {}

    def content_hash(self) -> str:
        data = self.model_dump(exclude={"version", "reference"})
        text = json.dumps(data, sort_keys=True, default=repr, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class Pipeline:
    """A pipeline: its graph is built and checked when it is defined (see :func:`pipeline`).

    Attributes:
        name: the pipeline's name.
        version: the content hash of its compiled spec (changes when a component's code does).
        params: ``{name: {"type", "default"?}}``.
        graph: the DAG as plain data; ``components`` the steps' components by name.
    """

    def __init__(self, *, name: str, graph: dict, components: dict[str, Component],
                 func: Callable | None = None, reference: str | None = None):
        self.name = name
        self.func = func
        self.graph = graph
        self.components = components
        self.params = graph["params"]
        self.reference = reference
        # The defining file too: a module loaded from a path may not import by name elsewhere.
        self.reference_file = None
        if func is not None and reference:
            import inspect

            source = inspect.getsourcefile(func)
            if source:
                self.reference_file = f"{source}:{reference.split(':', 1)[1]}"
        self._spec = PipelineSpec(name=name, reference=reference, params=graph["params"],
                                  components={n: c.to_dict() for n, c in components.items()},
                                  tasks=graph["tasks"], groups=graph["groups"],
                                  outputs=graph.get("outputs", {}))
        self.version = self._spec.content_hash()
        self._spec.version = self.version

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, version={self.version!r}, steps={len(self.graph['tasks'])})"

    def __call__(self, **kwargs: Any):
        if current_builder() is not None and self.func is not None:
            return inline(self.name, self.func, kwargs)
        raise SpecError(f"pipeline {self.name!r} is run with .run(params), or called inside "
                        "another @pipeline", field=self.name, value=kwargs,
                        allowed="pipeline.run({...})")

    @property
    def spec(self) -> PipelineSpec:
        """The compiled spec (what :func:`compile` writes)."""
        return self._spec

    def spec_dict(self) -> dict:
        return self._spec.model_dump()

    def check_params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Parameters with defaults filled in, checked against the declared types.

        Raises:
            SpecError: an unknown parameter, a missing one, or a value of the wrong type,
                naming ``<pipeline>.params.<name>``.
        """
        _spec.mapping(f"{self.name}.params", params, optional=True)
        params = dict(params or {})
        out: dict[str, Any] = {}
        for key in params:
            if key not in self.params:
                raise SpecError(f"pipeline {self.name!r} has no parameter {key!r}; it takes "
                                f"{sorted(self.params)}", field=f"{self.name}.params.{key}",
                                value=params[key], allowed=f"one of {sorted(self.params)}")
        for key, meta in self.params.items():
            field = f"{self.name}.params.{key}"
            if key in params:
                value = params[key]
            elif "default" in meta:
                value = meta["default"]
            else:
                raise SpecError(f"{field} is required ({meta['type']})",
                                field=field, value=None, allowed=meta["type"])
            if not _types.check_value(meta["type"], value):
                raise SpecError(f"{field} takes {meta['type']}, got {value!r}", field=field,
                                value=value,
                                allowed=meta["type"])
            out[key] = value
        return out

    def run(self, params: Mapping[str, Any] | None = None, *, mode: str = "ray",
            cache: bool = True, track: bool = True, progress: bool = True,
            raise_on_failure: bool = False) -> PipelineRun:
        """Run the pipeline to its end and return the run.

        Args:
            params: pipeline parameters (defaults fill the rest); checked before any step runs.
            mode: ``"ray"`` (default): steps as Ray tasks with their resources, independent
                steps in parallel, on the cluster :func:`raymlp.init` connects to;
                ``"local"``: in this process, one step at a time (a debugger stops inside a
                step).
            cache: False reruns every step (results are still cached for later runs).
            track: record the run in MLflow (a parent run, a nested run per step).
            progress: show progress on the console.
            raise_on_failure: raise :class:`~raymlp.errors.PipelineError` when the run fails
                (by default the returned run says FAILED and names the step).

        Returns:
            PipelineRun: id, status, per-step status, outputs, artifacts, durations.

        Raises:
            SpecError: bad parameters or options, before any step runs.
        """
        from raymlp.pipelines._runner import Runner

        _spec.choice("run.mode", mode, MODES)
        _spec.boolean("run.cache", cache)
        checked = self.check_params(params)
        if mode == "ray":
            import raymlp

            raymlp.init()
        state = Runner(self, checked, mode=mode, cache=cache, track=track,
                       progress=progress).run()
        return _finish(state, raise_on_failure, progress)


def _finish(state: dict, raise_on_failure: bool, progress: bool) -> PipelineRun:
    from raymlp import _console

    run = PipelineRun.from_state(state)
    if progress:
        _console.summary(f"pipeline {run.name} {run.status.lower()}", {
            "run id": run.id, "failed step": run.failed_step, "error": run.error,
            "steps": ", ".join(f"{k}: {v}" for k, v in run.counts().items()),
            "MLflow run": state.get("mlflow_run_id"),
            "resume": f"raymlp pipeline resume {run.id}" if run.status == "FAILED" else None})
    if raise_on_failure and run.status == "FAILED":
        raise PipelineError(f"pipeline run {run.id} failed: {run.error}", step=run.failed_step,
                            cause=run.error, run_id=run.id)
    return run


def pipeline(func: Callable | None = None, *, name: str | None = None):
    """Turn a function that calls components into a pipeline (KFP's ``@dsl.pipeline``).

    The function runs once, now, with references for its parameters: the graph it builds is
    checked at once, so a cycle, a missing input, a type mismatch or a read from a branch that
    may not run is a :class:`~raymlp.errors.SpecError` naming the step and the input.

    Args:
        name: the pipeline's name (default: the function's, with ``_`` as ``-``).

    Example:
        >>> @pipeline(name="seed")
        ... def seed(test_size: float = 0.2):
        ...     pre = preprocess(test_size=test_size)
        ...     train_model(data=pre.outputs["data"])
        >>> seed.run({"test_size": 0.3}).status
        'SUCCEEDED'
    """

    def wrap(f: Callable) -> Pipeline:
        pname = name or f.__name__.replace("_", "-")
        _spec.name("pipeline.name", pname)
        graph, components = build_graph(pname, f)
        from raymlp._util import reference

        ref = reference(f)
        return Pipeline(name=pname, graph=graph, components=components, func=f,
                        reference=None if "<locals>" in ref else ref)

    return wrap(func) if func is not None else wrap


def compile(pipe: Pipeline, path: str | Path) -> Path:
    """Write the pipeline's portable spec (YAML) to ``path``; returns the path."""
    import yaml

    _spec.instance("compile.pipeline", pipe, Pipeline, what="a raymlp.pipelines.Pipeline")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = pipe.spec.model_dump()
    data["reference"] = None  # a compiled pipeline stands on its own
    path.write_text(yaml.safe_dump(json.loads(json.dumps(data, default=repr)), sort_keys=False))
    return path


def from_spec(data: Mapping[str, Any]) -> Pipeline:
    """A pipeline from its compiled spec (the components rebuilt from their sources)."""
    try:
        spec = PipelineSpec.model_validate(dict(data))
    except pydantic.ValidationError as exc:
        raise SpecError(f"not a compiled pipeline: {exc}", field="PipelineSpec", value=None,
                        allowed="a file written by raymlp.pipelines.compile") from None
    components = {n: Component.from_dict(c) for n, c in spec.components.items()}
    graph = {"name": spec.name, "params": spec.params, "tasks": spec.tasks,
             "groups": spec.groups, "outputs": spec.outputs}
    return Pipeline(name=spec.name, graph=graph, components=components,
                    reference=spec.reference)


def load(path: str | Path) -> Pipeline:
    """Read a pipeline that :func:`compile` wrote; it runs without its defining module.

    Raises:
        SpecError: the file is missing or is no compiled pipeline.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SpecError(f"load: no file {str(p)!r}", field="path", value=str(p),
                        allowed="a compiled pipeline file")
    return from_spec(yaml.safe_load(p.read_text()))


# --- runs -----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StepStatus:
    """One step of a run.

    Attributes:
        name: the step (``"square[3]"`` inside a loop).
        status: PENDING, RUNNING, RETRYING, SUCCEEDED, CACHED, FAILED, SKIPPED or NOT_RUN
            (an input failed).
        attempts: attempts made in the latest execution (0 for a cache hit or a skip).
        cache_hit: whether the outputs came from the cache.
        duration_s: wall time of the successful attempt.
        outputs: output values by name; ``artifacts`` output artifacts (uri, digest, metadata).
        error: the exception of the last failed attempt.
        code_changed: ``"old -> new"`` code hashes when a resume ran fixed code.
    """

    name: str
    status: str
    attempts: int = 0
    cache_hit: bool = False
    duration_s: float | None = None
    outputs: dict = dataclasses.field(default_factory=dict)
    artifacts: dict = dataclasses.field(default_factory=dict)
    metrics: dict = dataclasses.field(default_factory=dict)
    error: str | None = None
    code_changed: str | None = None


@dataclasses.dataclass(frozen=True)
class PipelineRun:
    """The outcome of a pipeline run (also of one read back with :func:`get_run`).

    Attributes:
        id: the run id (``raymlp pipeline status ID``, :func:`resume`).
        name, version: the pipeline and its spec hash.
        status: SUCCEEDED, FAILED or RUNNING (a driver that died mid-run).
        params: the parameters it ran with.
        steps: per-step :class:`StepStatus`, by step name.
        outputs: the pipeline's returned outputs.
        mlflow_run_id: the parent MLflow run.
        duration_s: wall time.
        state: the run's record as stored.
    """

    id: str
    name: str
    version: str
    status: str
    params: dict
    steps: dict
    outputs: dict
    duration_s: float | None
    state: dict = dataclasses.field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_state(cls, state: dict) -> PipelineRun:
        steps = {}
        for name, rec in state.get("steps", {}).items():
            steps[name] = StepStatus(
                name=name, status=rec["status"], attempts=rec.get("attempts", 0),
                cache_hit=rec["status"] == "CACHED", duration_s=rec.get("duration_s"),
                outputs=dict(rec.get("values") or {}), artifacts=dict(rec.get("artifacts") or {}),
                metrics=dict(rec.get("metrics") or {}), error=rec.get("error"),
                code_changed=rec.get("code_changed"))
        return cls(id=state["id"], name=state["pipeline"], version=state["version"],
                   status=state["status"], params=dict(state["params"]), steps=steps,
                   outputs=dict(state.get("outputs") or {}),
                   duration_s=state.get("duration_s"), state=state)

    @property
    def mlflow_run_id(self) -> str | None:
        """The parent MLflow run (opened in the background: waits for it when needed)."""
        if self.state.get("mlflow_run_id") is None:
            from raymlp.pipelines._runner import flush_tracking

            flush_tracking(60.0)
        return self.state.get("mlflow_run_id")

    @property
    def failed_step(self) -> str | None:
        return next((n for n, s in self.steps.items() if s.status == "FAILED"), None)

    @property
    def error(self) -> str | None:
        step = self.failed_step
        return f"step {step!r} failed: {self.steps[step].error}" if step else None

    @property
    def artifacts(self) -> dict[str, dict]:
        """Every output artifact, as ``{"step.output": {...}}``."""
        return {f"{n}.{a}": art for n, s in self.steps.items() for a, art in s.artifacts.items()}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.steps.values():
            out[s.status] = out.get(s.status, 0) + 1
        return out

    def graph(self, format: str = "mermaid") -> str:
        """The DAG with each step's status, as Mermaid or DOT text."""
        from raymlp.pipelines._graph import render

        return render(self.state["spec"], format=format, steps=self.state.get("steps"))

    def _repr_html_(self) -> str:
        from raymlp.pipelines._graph import html_table

        head = (f"<b>pipeline {html.escape(self.name)}</b> run <code>{html.escape(self.id)}"
                f"</code>: <b>{html.escape(self.status)}</b>")
        return head + html_table(self.state["spec"], self.state.get("steps", {}))


def get_run(run_id: str) -> PipelineRun:
    """A run as recorded (also one whose driver died).

    Raises:
        SpecError: no run of that id under this raymlp home.
    """
    state = _store.load_run(run_id)
    if state is None:
        raise SpecError(f"no pipeline run {run_id!r} under {_store.pipelines_home()}",
                        field="run_id", value=run_id, allowed="an id from `raymlp pipeline runs`")
    return PipelineRun.from_state(state)


def list_runs(pipeline: str | None = None) -> list[PipelineRun]:
    """Recorded runs, newest first (of ``pipeline`` only, when given)."""
    return [PipelineRun.from_state(s) for s in _store.list_runs()
            if pipeline is None or s["pipeline"] == pipeline]


def resume(run_id: str, pipeline: Pipeline | str | None = None, *, mode: str | None = None,
           progress: bool = True, raise_on_failure: bool = False) -> PipelineRun:
    """Continue run ``run_id``: rerun only the steps that failed or never ran, reusing the
    outputs of the finished ones. Works for a run whose driver was killed, too.

    The steps run the pipeline's code as it is now (its module imported again, so a fix to
    the failed step is used, and recorded as ``code_changed`` on the step and in MLflow);
    ``pipeline`` names the code explicitly (a :class:`Pipeline` or ``"module:attr"``). A
    pipeline defined where it cannot be imported again runs from the spec stored with the run.

    Raises:
        SpecError: no such run, or the pipeline given is another one.
    """
    import importlib
    import sys

    from raymlp._util import load_object
    from raymlp.pipelines._runner import Runner, reset_for_resume

    state = _store.load_run(run_id)
    if state is None:
        raise SpecError(f"no pipeline run {run_id!r} under {_store.pipelines_home()}",
                        field="run_id", value=run_id, allowed="an id from `raymlp pipeline runs`")
    pipe: Any = pipeline
    for ref in (state.get("reference"), state.get("reference_file")) if pipe is None else ():
        if not ref:
            continue
        module = ref.split(":")[0] if not ref.split(":")[0].endswith(".py") else None
        try:
            if module in sys.modules and module != "__main__":
                importlib.reload(sys.modules[module])  # the fixed code, not the cached one
            pipe = load_object(ref, field="resume.pipeline")
            break
        except (SpecError, ImportError):
            pipe = None
    if pipe is None:
        pipe = from_spec(state["spec"])
    pipe = load_object(pipe, field="resume.pipeline")
    _spec.instance("resume.pipeline", pipe, Pipeline, what="a raymlp.pipelines.Pipeline")
    if pipe.name != state["pipeline"]:
        raise SpecError(f"run {run_id!r} is of pipeline {state['pipeline']!r}, not {pipe.name!r}",
                        field="resume.pipeline", value=pipe.name, allowed=state["pipeline"])
    mode = mode or state.get("mode", "ray")
    _spec.choice("resume.mode", mode, MODES)
    if pipe.version != state["version"]:
        state.setdefault("versions", []).append(state["version"])
        state["version"] = pipe.version
    state["spec"] = pipe.spec_dict()
    state["mode"] = mode
    reset_for_resume(state)
    if mode == "ray":
        import raymlp

        raymlp.init()
    final = Runner(pipe, state["params"], mode=mode, cache=state.get("cache", True), track=True,
                   state=state, progress=progress).run()
    return _finish(final, raise_on_failure, progress)
