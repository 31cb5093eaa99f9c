"""The one layer over MLflow: experiments, runs, metrics, artifacts, models, registry, lineage."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from raymlp import _config
from raymlp.errors import SpecError, TrackingError

# Lineage tags written on runs and model versions.
TAG_DATA_HASH = "raymlp.data_hash"
TAG_SOURCE_RUN = "raymlp.source_run_id"
TAG_MODEL_URI = "raymlp.model_uri"
TAG_KIND = "raymlp.kind"

_FLAVORS = {
    "torch": "mlflow.pytorch",
    "pytorch": "mlflow.pytorch",
    "tensorflow": "mlflow.tensorflow",
    "keras": "mlflow.tensorflow",
    "xgboost": "mlflow.xgboost",
    "sklearn": "mlflow.sklearn",
    "pyfunc": "mlflow.pyfunc",
}
_FLAVOR_PACKAGES = {
    "mlflow.pytorch": ("torch", "cloudpickle"),
    "mlflow.tensorflow": ("tensorflow", "keras"),
    "mlflow.xgboost": ("xgboost", "scikit-learn"),
    "mlflow.sklearn": ("scikit-learn", "cloudpickle"),
    "mlflow.pyfunc": ("cloudpickle",),
}
_MAX_PARAM_LEN = 6000
_lock = threading.Lock()
_clients: dict[tuple[str, str], Any] = {}


def flavor_module(flavor: str):
    """The ``mlflow.<flavor>`` module for a raymlp flavor name."""
    import importlib

    if flavor not in _FLAVORS:
        raise SpecError(
            f"model flavor {flavor!r} is not supported; allowed: {sorted(_FLAVORS)}",
            field="flavor", value=flavor,
        )
    return importlib.import_module(_FLAVORS[flavor])


def pip_requirements(flavor: str) -> list[str]:
    """Pinned requirements of a flavor's models, from what is installed here.

    Given explicitly so MLflow skips inferring them (which imports the model in a subprocess
    and takes seconds).
    """
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("mlflow", *_FLAVOR_PACKAGES.get(_FLAVORS.get(flavor, ""), ())):
        try:
            reqs.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return reqs


def client():
    """An ``MlflowClient`` for the configured tracking URI (one per URI, reused)."""
    import mlflow
    from mlflow import MlflowClient

    cfg = _config.get()
    key = (cfg.tracking_uri, cfg.artifact_root)
    with _lock:
        if key not in _clients:
            _prepare_local_store(cfg.tracking_uri)
            _clients[key] = MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
        # The fluent API (model logging, pyfunc loading) follows the same store.
        if mlflow.get_tracking_uri() != cfg.tracking_uri:
            mlflow.set_tracking_uri(cfg.tracking_uri)
            mlflow.set_registry_uri(cfg.tracking_uri)
        return _clients[key]


def _prepare_local_store(uri: str) -> None:
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    elif "://" not in uri:
        Path(uri).mkdir(parents=True, exist_ok=True)


def experiment_id(name: str | None = None) -> str:
    """The id of experiment ``name`` (default: the configured one), created when missing."""
    cfg = _config.get()
    name = name or cfg.experiment
    mlc = client()
    exp = mlc.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    local_store = cfg.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in cfg.tracking_uri
    if local_store:
        # A local store keeps artifacts under the artifact root, not in the working directory;
        # a tracking server decides for itself (it may proxy them to object storage).
        root = cfg.artifact_root
        if "://" not in root or root.startswith("file:"):
            root = Path(root.removeprefix("file://")).resolve().as_uri()
        location = f"{root.rstrip('/')}/{name}"
    try:
        return mlc.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another process
        exp = mlc.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _stringify(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text[:_MAX_PARAM_LEN]


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested dicts into dotted MLflow params (``{"opt": {"lr": 1}}`` -> ``opt.lr``)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = _stringify(value)
    return out


class Run:
    """An MLflow run, used as a context manager or ended explicitly.

    Example:
        >>> with tracking.start_run("fit", params={"lr": 0.1}) as run:
        ...     run.log_metrics({"loss": 0.5}, step=0)
    """

    def __init__(self, run_id: str):
        self.run_id = run_id

    def __repr__(self) -> str:
        return f"Run(run_id={self.run_id!r})"

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end("FAILED" if exc_type else "FINISHED")

    @property
    def info(self):
        return client().get_run(self.run_id).info

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            client().log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log the numeric entries of ``metrics`` at ``step`` (others are skipped)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step or 0)) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if items:
            client().log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        client().log_batch(self.run_id, tags=[RunTag(k, _stringify(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Log a file, or a whole directory's contents, under ``artifact_path``."""
        path = Path(path)
        if path.is_dir():
            client().log_artifacts(self.run_id, str(path), artifact_path)
        else:
            client().log_artifact(self.run_id, str(path), artifact_path)

    def log_model(self, model: Any, *, flavor: str, name: str = "model", signature=None,
                  input_example=None, **kwargs: Any) -> str:
        """Log ``model`` with its MLflow flavor; returns a URI ``mlflow.pyfunc.load_model`` takes."""
        module = flavor_module(flavor)
        kwargs.setdefault("pip_requirements", pip_requirements(flavor))
        # pyfunc takes the model as python_model=, every native flavor positionally.
        args, model_kw = ((), {"python_model": model}) if flavor == "pyfunc" else ((model,), {})
        with self._active():
            info = module.log_model(*args, name=name, signature=signature,
                                    input_example=input_example, **model_kw, **kwargs)
        return info.model_uri

    @contextlib.contextmanager
    def _active(self) -> Iterator[None]:
        import mlflow

        client()
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            yield
            return
        mlflow.start_run(run_id=self.run_id, nested=active is not None)
        try:
            yield
        finally:
            # Leave the run RUNNING: its owner ends it.
            mlflow.end_run(status="RUNNING")

    def end(self, status: str = "FINISHED") -> None:
        client().set_terminated(self.run_id, status=status)


def start_run(name: str | None = None, *, experiment: str | None = None,
              params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
              parent_run_id: str | None = None) -> Run:
    """Start an MLflow run (nested under ``parent_run_id`` when given)."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    all_tags = {k: _stringify(v) for k, v in (tags or {}).items()}
    if parent_run_id:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    if name:
        all_tags[MLFLOW_RUN_NAME] = name
    try:
        mlrun = client().create_run(experiment_id(experiment), tags=all_tags, run_name=name)
    except Exception as exc:
        raise TrackingError(f"cannot start a run on {_config.get().tracking_uri!r}: {exc}") from exc
    run = Run(mlrun.info.run_id)
    if params:
        run.log_params(params)
    return run


def get_run(run_id: str):
    """The MLflow ``Run`` entity (info, params, latest metrics, tags)."""
    try:
        return client().get_run(run_id)
    except Exception as exc:
        raise TrackingError(f"no run {run_id!r} in {_config.get().tracking_uri!r}: {exc}") from exc


def child_runs(parent_run_id: str) -> list:
    """The runs nested directly under ``parent_run_id``."""
    parent = get_run(parent_run_id)
    return client().search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
    )


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """Every value logged for ``key`` in run order: ``[(step, value), ...]``."""
    hist = client().get_metric_history(run_id, key)
    return [(m.step, m.value) for m in sorted(hist, key=lambda m: (m.timestamp, m.step))]


def register_model(model_uri: str, name: str, *, alias: str | Iterable[str] | None = None,
                   tags: Mapping[str, Any] | None = None):
    """Register ``model_uri`` as a new version of ``name`` and point ``alias`` at it.

    Lineage tags from the producing run (its id and data hash) are copied onto the version.

    Returns:
        mlflow.entities.model_registry.ModelVersion: the new version.
    """
    import mlflow

    if not isinstance(name, str) or not name.strip():
        raise SpecError(f"register: name must be a non-empty string, got {name!r}",
                        field="name", value=name)
    mlc = client()
    try:
        version = mlflow.register_model(model_uri, name, tags=dict(tags or {}))
    except Exception as exc:
        raise TrackingError(f"cannot register {model_uri!r} as {name!r}: {exc}") from exc
    lineage = {TAG_MODEL_URI: model_uri}
    if version.run_id:
        lineage[TAG_SOURCE_RUN] = version.run_id
        data_hash = mlc.get_run(version.run_id).data.tags.get(TAG_DATA_HASH)
        if data_hash:
            lineage[TAG_DATA_HASH] = data_hash
    for key, value in lineage.items():
        mlc.set_model_version_tag(name, version.version, key, value)
    aliases = [alias] if isinstance(alias, str) else list(alias or [])
    for a in aliases:
        mlc.set_registered_model_alias(name, a, version.version)
    return mlc.get_model_version(name, version.version)


def set_alias(name: str, alias: str, version: int | str) -> None:
    """Point ``models:/name@alias`` at ``version``."""
    client().set_registered_model_alias(name, alias, str(version))


def get_version(name: str, *, alias: str | None = None, version: int | str | None = None):
    """A registered model version by alias or number."""
    mlc = client()
    try:
        if alias is not None:
            return mlc.get_model_version_by_alias(name, alias)
        return mlc.get_model_version(name, str(version))
    except Exception as exc:
        raise TrackingError(f"no model version {name}@{alias or version}: {exc}") from exc


def lineage(name: str, version: int | str) -> dict[str, str]:
    """Where a model version came from: source run, model URI, data hash, and the run's params."""
    mv = get_version(name, version=version)
    out = {k: v for k, v in mv.tags.items() if k.startswith("raymlp.")}
    if mv.run_id:
        out.setdefault(TAG_SOURCE_RUN, mv.run_id)
    return out


def load_model(uri: str, *, flavor: str = "pyfunc"):
    """Load a model by URI (``models:/name@alias``, ``runs:/...``, a path) with a flavor."""
    client()
    try:
        return flavor_module(flavor).load_model(uri)
    except SpecError:
        raise
    except Exception as exc:
        raise TrackingError(f"cannot load model {uri!r} with flavor {flavor!r}: {exc}") from exc


def data_hash(*objs: Any) -> str:
    """A content hash of data: numpy arrays, pandas objects, bytes, str, files or directories.

    Two calls on equal data give the same hash; any change of a value, shape or dtype changes it.
    """
    h = hashlib.sha256()
    for obj in objs:
        _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj: Any) -> None:
    import numpy as np

    if isinstance(obj, (bytes, bytearray, memoryview)):
        h.update(b"b"); h.update(bytes(obj))
    elif isinstance(obj, str):
        h.update(b"s"); h.update(obj.encode())
    elif isinstance(obj, os.PathLike):
        path = Path(obj)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
            h.update(f.read_bytes())
    elif type(obj).__module__.startswith("pandas"):
        import pandas as pd

        h.update(b"p"); h.update(str(list(getattr(obj, "columns", []))).encode())
        h.update(pd.util.hash_pandas_object(obj, index=True).values.tobytes())
    elif isinstance(obj, (list, tuple)):
        h.update(b"l%d" % len(obj))
        for item in obj:
            _feed(h, item)
    else:
        arr = np.ascontiguousarray(np.asarray(obj))
        h.update(f"a{arr.dtype.str}{arr.shape}".encode()); h.update(arr.tobytes())
