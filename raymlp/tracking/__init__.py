"""raymlp.tracking: the MLflow layer every capability uses.

Experiments, runs (nested too), params, step metrics, artifacts, models with signatures,
the model registry with aliases (``models:/name@champion``) and lineage tags.
"""

from raymlp.tracking._store import (
    Run,
    child_runs,
    data_hash,
    experiment_id,
    get_run,
    get_version,
    lineage,
    load_model,
    metric_history,
    register_model,
    set_alias,
    start_run,
)

__all__ = [
    "Run",
    "child_runs",
    "data_hash",
    "experiment_id",
    "get_run",
    "get_version",
    "lineage",
    "load_model",
    "metric_history",
    "register_model",
    "set_alias",
    "start_run",
]
