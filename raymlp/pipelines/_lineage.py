"""Walking a registered model back to the pipeline run, steps, parameters and input data that
produced it, through MLflow alone (the model version's tags, the pipeline's parent run and
its nested step runs)."""

from __future__ import annotations

from typing import Any

from raymlp import _spec
from raymlp.errors import TrackingError

__all__ = ["lineage"]


def _version(model_uri: str):
    from raymlp import tracking

    _spec.string("lineage.model_uri", model_uri)
    rest = model_uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return tracking.get_version(name, alias=alias)
    if "/" in rest:
        name, version = rest.rsplit("/", 1)
        return tracking.get_version(name, version=version)
    raise _spec.fail("lineage.model_uri", model_uri,
                     "a registered model URI: models:/NAME/VERSION or models:/NAME@ALIAS")


def lineage(model_uri: str) -> dict[str, Any]:
    """Where a registered model came from: the pipeline run, every step that led to it (with
    its parameters and the digests of what it read and wrote), and the input data's digests.

    Args:
        model_uri: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``.

    Returns:
        dict: ``model`` (name, version, source run), ``pipeline`` (name, version, run id,
        MLflow run id, params), ``steps`` (from the registering step back to the first, each
        with ``params``, ``inputs`` and ``outputs`` digests and its MLflow run id) and ``data``
        (digests of the artifacts no step of the run read from another step: the input data).

    Raises:
        TrackingError: the model was not registered inside a pipeline step.
    """
    from raymlp import tracking
    from raymlp.pipelines._runner import flush_tracking

    flush_tracking()  # this process's step runs are written in the background
    mv = _version(model_uri)
    tags = dict(mv.tags)
    parent_id = tags.get("raymlp.pipeline.mlflow_run_id")
    if not parent_id:
        raise TrackingError(f"{model_uri} was not registered inside a pipeline step (its version "
                            "has no raymlp.pipeline.mlflow_run_id tag)")
    parent = tracking.get_run(parent_id)
    steps: dict[str, dict] = {}
    produced_by: dict[str, str] = {}
    for child in tracking.child_runs(parent_id):
        ctags = child.data.tags
        name = ctags.get("raymlp.pipeline.step")
        if name is None:  # a run a step nested under the pipeline's (a training job's)
            continue
        outputs = {k.split(".")[2]: v for k, v in ctags.items()
                   if k.startswith("raymlp.artifact.") and k.endswith(".digest")}
        inputs = {k.split(".")[2]: v for k, v in ctags.items()
                  if k.startswith("raymlp.input.") and k.endswith(".digest")}
        steps[name] = {"step": name, "mlflow_run_id": child.info.run_id,
                       "params": dict(child.data.params), "inputs": inputs, "outputs": outputs,
                       "cache_hit": ctags.get("raymlp.pipeline.cache_hit") == "true",
                       "metrics": dict(child.data.metrics)}
        for digest in outputs.values():
            produced_by.setdefault(digest, name)
    start = tags.get("raymlp.pipeline.step")
    chain: list[dict] = []
    data: dict[str, str] = {}
    todo = [start] if start in steps else []
    seen: set[str] = set()
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        step = steps[name]
        chain.append(step)
        for digest in step["inputs"].values():
            producer = produced_by.get(digest)
            if producer and producer not in seen:
                todo.append(producer)
        if not step["inputs"]:
            data.update({f"{name}.{k}": v for k, v in step["outputs"].items()})
    return {
        "model": {"name": mv.name, "version": mv.version, "source_run_id": mv.run_id,
                  "data": {k: v for k, v in tags.items() if k.startswith("raymlp.dataset.")}},
        "pipeline": {"name": tags.get("raymlp.pipeline.name"),
                     "version": tags.get("raymlp.pipeline.version"),
                     "run_id": tags.get("raymlp.pipeline.run_id"), "mlflow_run_id": parent_id,
                     "params": dict(parent.data.params)},
        "steps": chain,
        "data": data,
    }
