"""raymlp.tracking: the MLflow layer every capability uses.

Experiments (marked for MLflow's classic model-development view), runs (nested too), params,
step metrics, artifacts; models as MLflow 3 LoggedModels linked to their source run, saved with
one flavor registry; training data as MLflow dataset inputs; the model registry with aliases
(``models:/name@champion``) and lineage.

Example:
    >>> from raymlp import tracking
    >>> with tracking.start_run("fit", params={"lr": 0.1}) as run:
    ...     run.log_metrics({"loss": 0.5}, step=0)
    ...     run.log_dataset(name="train", digest=tracking.data_hash(x, y))
    ...     uri = run.log_model(model, flavor="sklearn", input_example=x[:5])
    >>> tracking.register_model(uri, "iris", alias="champion")
    >>> tracking.load_model("models:/iris@champion").predict(x)

Everything else in this package is private: other capabilities use only these names.
"""

from raymlp.tracking._flavors import FLAVORS, Flavor, flavor, native_flavor
from raymlp.tracking._models import download_model, model_metadata, save_model
from raymlp.tracking._store import (
    TAG_DATA_HASH,
    TAG_KIND,
    TAG_MODEL_URI,
    TAG_SOURCE_RUN,
    Run,
    child_runs,
    client,
    data_hash,
    dataset_digest,
    experiment_id,
    get_run,
    get_version,
    lineage,
    load_model,
    logged_model,
    metric_history,
    register_model,
    set_alias,
    start_run,
)
from raymlp.tracking._writer import BufferedRun, Writer, writer

__all__ = [
    "FLAVORS",
    "TAG_DATA_HASH",
    "TAG_KIND",
    "TAG_MODEL_URI",
    "TAG_SOURCE_RUN",
    "BufferedRun",
    "Flavor",
    "Run",
    "Writer",
    "child_runs",
    "client",
    "data_hash",
    "dataset_digest",
    "download_model",
    "experiment_id",
    "flavor",
    "get_run",
    "get_version",
    "lineage",
    "load_model",
    "logged_model",
    "metric_history",
    "model_metadata",
    "native_flavor",
    "register_model",
    "save_model",
    "set_alias",
    "start_run",
    "writer",
]
