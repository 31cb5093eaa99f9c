"""raymlp.pipelines: Kubeflow Pipelines' DSL on Ray tasks.

Components are typed Python functions (:func:`component`); a :func:`pipeline` wires them into
a DAG, KFP style, with control flow (:class:`If` / :class:`Elif` / :class:`Else`,
:class:`ParallelFor` with :class:`Collected` fan-in, :class:`ExitHandler`, nested pipelines).
The graph is checked when it is defined. :meth:`Pipeline.run` runs the steps as Ray tasks
(``mode="local"``: in this process), with a content-addressed cache, retries, timeouts, a
durable run record that :func:`resume` continues, and every run and step in MLflow::

    from raymlp.pipelines import component, pipeline, If, Input, Output, Dataset

    @component
    def make(n: int, data: Output[Dataset]) -> int: ...

    @pipeline(name="demo")
    def demo(n: int = 10):
        m = make(n=n)
        with If(m.outputs["Output"] > 5):
            ...

    run = demo.run({"n": 20})      # run.status, run.steps, run.outputs
    pipelines.resume(run.id)       # after a fix: reruns only what failed or never ran
"""

from raymlp.pipelines._component import (
    Component,
    ComponentOptions,
    StepContext,
    component,
    current_step,
    log_metric,
)
from raymlp.pipelines._dsl import (
    Collected,
    Condition,
    Elif,
    Else,
    ExitHandler,
    If,
    ParallelFor,
    Task,
)
from raymlp.pipelines._lineage import lineage
from raymlp.pipelines._pipeline import (
    Pipeline,
    PipelineRun,
    PipelineSpec,
    StepStatus,
    compile,
    get_run,
    list_runs,
    load,
    pipeline,
    resume,
)
from raymlp.pipelines._runner import flush_tracking
from raymlp.pipelines._schedule import Schedule, ScheduleHandle, get_schedule, list_schedules
from raymlp.pipelines._types import (
    HTML,
    Artifact,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
    PipelineTaskFinalStatus,
)

__all__ = [
    "HTML",
    "Artifact",
    "Collected",
    "Component",
    "ComponentOptions",
    "Condition",
    "Dataset",
    "Elif",
    "Else",
    "ExitHandler",
    "If",
    "Input",
    "Markdown",
    "Metrics",
    "Model",
    "Output",
    "ParallelFor",
    "Pipeline",
    "PipelineRun",
    "PipelineSpec",
    "PipelineTaskFinalStatus",
    "Schedule",
    "ScheduleHandle",
    "StepContext",
    "StepStatus",
    "Task",
    "compile",
    "component",
    "current_step",
    "flush_tracking",
    "get_run",
    "get_schedule",
    "lineage",
    "list_runs",
    "list_schedules",
    "load",
    "log_metric",
    "pipeline",
    "resume",
]
