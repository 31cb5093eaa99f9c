"""The one layer over MLflow: experiments, runs, metrics, artifacts, models, registry, lineage."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from raymlp import _config, _console, _spec
from raymlp.errors import TrackingError
from raymlp.tracking import _models
from raymlp.tracking._flavors import flavor as _flavor
from raymlp.tracking._models import save_model

# Lineage tags written on runs and model versions.
TAG_DATA_HASH = "raymlp.data_hash"
TAG_SOURCE_RUN = "raymlp.source_run_id"
TAG_MODEL_URI = "raymlp.model_uri"
TAG_KIND = "raymlp.kind"
TAG_DATASET_PREFIX = "raymlp.dataset."
# The full digest of a dataset input, in its profile (MLflow's digest field is 36 long at most).
PROFILE_DIGEST = "raymlp.digest"
_MAX_DIGEST_LEN = 36

# The experiment tag MLflow's UI reads to choose its view: raymlp's experiments open on runs
# and models (the classic view), not the GenAI one the UI guesses for a run without models.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

_MAX_PARAM_LEN = 6000
_lock = threading.Lock()
_clients: dict[tuple[str, str], Any] = {}
_kind_checked: set[tuple[str, str]] = set()


def client():
    """An ``MlflowClient`` for the configured tracking URI (one per URI, reused)."""
    import mlflow
    from mlflow import MlflowClient

    cfg = _config.get()
    key = (cfg.tracking_uri, cfg.artifact_root)
    with _lock:
        if key not in _clients:
            _console.quiet()  # before the store exists: creating it logs alembic's INFO lines
            _prepare_local_store(cfg.tracking_uri)
            _clients[key] = MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
        # The fluent API (model logging, pyfunc loading) follows the same store.
        if mlflow.get_tracking_uri() != cfg.tracking_uri:
            mlflow.set_tracking_uri(cfg.tracking_uri)
            mlflow.set_registry_uri(cfg.tracking_uri)
        return _clients[key]


def _prepare_local_store(uri: str) -> None:
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        _use_wal(path)
    elif "://" not in uri:
        Path(uri).mkdir(parents=True, exist_ok=True)


_wal_files: set[str] = set()


def _use_wal(path: Path) -> None:
    """Put a SQLite store in write-ahead-log mode, its connections at ``synchronous=NORMAL``.

    In SQLite's default mode every commit syncs a rollback journal and the database (several
    fsyncs); a tuning trial's three writes cost ~90 ms so on a 2-core machine, ~11 ms in WAL
    mode at NORMAL (measured by writing 50 nested runs). A commit still survives any crash of
    the writing process; an OS crash or power loss can roll back the last commits, never
    corrupt the store. Readers no longer block the writer, so parallel processes that log to
    the store wait less for its lock. The mode stays with the file; other tools read it as is.
    """
    import sqlite3
    from contextlib import closing

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if str(path) == ":memory:":
        return
    try:
        with closing(sqlite3.connect(path, timeout=20)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error:  # a file system without shared memory: keep SQLite's default
        return
    if not _wal_files:
        event.listen(Engine, "connect", _sync_normal)
    _wal_files.add(os.path.realpath(path))


def _sync_normal(dbapi_conn, _record) -> None:
    import sqlite3

    if isinstance(dbapi_conn, sqlite3.Connection):
        row = dbapi_conn.execute("PRAGMA database_list").fetchone()
        if row and row[2] and os.path.realpath(row[2]) in _wal_files:
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")


def experiment_id(name: str | None = None) -> str:
    """The id of experiment ``name`` (default: the configured one), created when missing.

    raymlp's experiments are marked as classic model development (MLflow's
    ``mlflow.experimentKind`` tag), so MLflow's UI opens them on runs and models.
    """
    cfg = _config.get()
    name = name or cfg.experiment
    mlc = client()
    exp = mlc.get_experiment_by_name(name)
    if exp is not None:
        _mark_kind(mlc, exp)
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
        exp_id = mlc.create_experiment(name, artifact_location=location,
                                       tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND})
    except Exception:  # created concurrently by another process
        exp = mlc.get_experiment_by_name(name)
        if exp is None:
            raise
        _mark_kind(mlc, exp)
        return exp.experiment_id
    _kind_checked.add((cfg.tracking_uri, exp_id))
    return exp_id


def _mark_kind(mlc, exp) -> None:
    """Mark an existing experiment as classic model development unless a kind was chosen.

    MLflow's UI stores the kind it guessed (``..._inferred``, ``no_inferred_type``) in the same
    tag; a guess is replaced, a kind someone set on purpose is kept.
    """
    key = (_config.get().tracking_uri, exp.experiment_id)
    if key in _kind_checked:
        return
    kind = exp.tags.get(TAG_EXPERIMENT_KIND)
    if kind is None or kind.endswith("_inferred") or kind in ("no_inferred_type", "empty"):
        mlc.set_experiment_tag(exp.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
    _kind_checked.add(key)


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

    def __enter__(self) -> Run:
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

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, *,
                    model_id: str | None = None) -> None:
        """Log the numeric entries of ``metrics`` at ``step`` (others are skipped).

        With ``model_id`` (a LoggedModel's id, the last part of a ``models:/<id>`` URI) the
        metrics are linked to that model too, as MLflow's model pages show them.
        """
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step or 0), model_id=model_id)
                 for k, v in metrics.items()
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
                  input_example=None) -> str:
        """Log ``model`` as an MLflow LoggedModel whose source run is this run.

        The model is saved with :func:`raymlp.tracking.save_model` (signature inferred from
        ``input_example``, torch in a format that serves on any device) and logged with
        :meth:`log_model_dir`.

        Returns:
            str: ``models:/<model_id>``, which :func:`load_model` and :func:`register_model`
            take; ``runs:/<run_id>/<name>`` loads it too.
        """
        with tempfile.TemporaryDirectory(prefix="raymlp-model-") as d:
            path = Path(d) / name
            save_model(model, path, flavor=flavor, signature=signature,
                       input_example=input_example)
            return self.log_model_dir(path, name=name)

    def log_model_dir(self, path: str | os.PathLike, *, name: str = "model",
                      step: int | None = None) -> str:
        """Log an MLflow model directory saved elsewhere as a LoggedModel of this run.

        A training worker saves the model (:func:`raymlp.tracking.save_model`); the driver
        calls this. The model appears in the run's "Logged models" and the experiment's model
        list, carries the run's params, and the run's metrics at ``step`` (default: each
        metric's latest value) are linked to it.

        Args:
            path: a local model directory (it holds an ``MLmodel`` file).
            name: the model's name; ``runs:/<run_id>/<name>`` loads it.
            step: the training step the model comes from.

        Returns:
            str: ``models:/<model_id>``.

        Raises:
            TrackingError: ``path`` is no model directory, or the store refused it.
        """
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model

        src = Path(path)
        if not (src / "MLmodel").is_file():
            raise TrackingError(f"log_model_dir: no MLflow model at {str(src)!r} (no MLmodel file)")
        mlc = client()
        run = mlc.get_run(self.run_id)
        meta = Model.load(str(src))
        flavor_name = meta.metadata.get(_models.METADATA_FLAVOR) if meta.metadata else None
        tags = {TAG_KIND: "model", TAG_SOURCE_RUN: self.run_id}
        if flavor_name:
            tags["raymlp.flavor"] = flavor_name
        try:
            model = mlc.create_logged_model(run.info.experiment_id, name=name,
                                            source_run_id=self.run_id, tags=tags,
                                            params=dict(run.data.params))
        except Exception as exc:
            raise TrackingError(f"cannot create a logged model for run {self.run_id!r}: {exc}") \
                from exc
        try:
            links = self._metrics_at(mlc, step, model.model_id)
            out_step = step if step is not None else max((m.step for m in links), default=0)
            mlc.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step=out_step)])
            if links:
                mlc.log_batch(self.run_id, metrics=links)
            # The MLmodel names the logged model and its run, as MLflow's own log_model writes.
            meta.model_id = meta.model_uuid = model.model_id
            meta.run_id = self.run_id
            meta.artifact_path = model.artifact_location
            with tempfile.TemporaryDirectory(prefix="raymlp-model-") as d:
                local = Path(d) / name
                shutil.copytree(src, local)
                meta.save(str(local / "MLmodel"))
                mlc.log_model_artifacts(model.model_id, str(local))
        except Exception as exc:
            mlc.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
            raise TrackingError(f"cannot log model {str(src)!r} to run {self.run_id!r}: {exc}") \
                from exc
        mlc.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        return f"models:/{model.model_id}"

    def _metrics_at(self, mlc, step: int | None, model_id: str) -> list:
        """The run's metric entries at ``step`` (each metric's latest one when None), linked to
        ``model_id``."""
        from mlflow.entities import Metric

        out = []
        for key in mlc.get_run(self.run_id).data.metrics:
            hist = [m for m in mlc.get_metric_history(self.run_id, key) if m.model_id is None]
            if step is not None:
                hist = [m for m in hist if m.step == step]
            elif hist:
                hist = [max(hist, key=lambda m: (m.step, m.timestamp))]
            out.extend(Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id)
                       for m in hist)
        return out

    def log_dataset(self, *, name: str, digest: str, source: str | None = None,
                    context: str = "training") -> None:
        """Record data this run used as an MLflow dataset input (name, digest, source).

        Args:
            name: the dataset's name (``"train"``).
            digest: its content hash (:func:`raymlp.tracking.data_hash`).
            source: where it came from: a path or URL (``s3://...``), or any description.
            context: how the run used it (``"training"``, ``"validation"``, ...).
        """
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        for field, value in (("name", name), ("digest", digest), ("context", context)):
            _spec.string(f"log_dataset.{field}", value)
        _spec.string("log_dataset.source", source, optional=True)
        source_type, source_json = _dataset_source(source)
        # MLflow keeps digests of at most 36 characters; a longer one (data_hash's sha256) is
        # recorded by its first 32 there and in full in the dataset's profile.
        short = digest if len(digest) <= _MAX_DIGEST_LEN else digest[:32]
        dataset = Dataset(name=name, digest=short, source_type=source_type, source=source_json,
                          profile=json.dumps({PROFILE_DIGEST: digest}))
        client().log_inputs(self.run_id, datasets=[
            DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])])

    def end(self, status: str = "FINISHED") -> None:
        client().set_terminated(self.run_id, status=status)


def _dataset_source(source: str | None) -> tuple[str, str]:
    """(source type, source JSON) of a dataset input, as MLflow's dataset sources write them."""
    if source is None:
        return "code", json.dumps({"tags": {}})
    if "://" in source:
        import warnings

        from mlflow.data.dataset_source_registry import resolve_dataset_source

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "can be interpreted in multiple ways"
                resolved = resolve_dataset_source(source)
            return resolved._get_source_type(), resolved.to_json()
        except Exception:  # a scheme MLflow has no source for: kept as given
            return "external", json.dumps({"uri": source})
    return "local", json.dumps({"uri": source})


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

    ``runs:/<run_id>/<name>`` and ``models:/<model_id>`` register the run's LoggedModel (the
    version links to it and to its source run). Lineage tags from the producing run (its id,
    data hash and dataset digests) are copied onto the version.

    Returns:
        mlflow.entities.model_registry.ModelVersion: the new version.

    Raises:
        SpecError: an empty name.
        TrackingError: the model or the store cannot be reached.
    """
    _spec.string("register_model.name", name)
    mlc = client()
    try:
        source, run_id, model_id = _registration_source(mlc, model_uri)
        _ensure_registered_model(mlc, name)
        version = mlc.create_model_version(name, source, run_id=run_id,
                                           tags={k: _stringify(v) for k, v in (tags or {}).items()},
                                           model_id=model_id)
    except Exception as exc:
        raise TrackingError(f"cannot register {model_uri!r} as {name!r}: {exc}") from exc
    lineage_tags = {TAG_MODEL_URI: model_uri}
    if version.run_id:
        lineage_tags[TAG_SOURCE_RUN] = version.run_id
        lineage_tags.update(_run_lineage(mlc.get_run(version.run_id)))
    for key, value in lineage_tags.items():
        mlc.set_model_version_tag(name, version.version, key, value)
    aliases = [alias] if isinstance(alias, str) else list(alias or [])
    for a in aliases:
        mlc.set_registered_model_alias(name, a, version.version)
    return mlc.get_model_version(name, version.version)


def _registration_source(mlc, uri: str) -> tuple[str, str | None, str | None]:
    """(source, run id, LoggedModel id) of a model URI, as MLflow's registry takes them."""
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    if RunsArtifactRepository.is_runs_uri(uri):
        run_id, path = RunsArtifactRepository.parse_runs_uri(uri)
        model = logged_model(run_id, path or "model")
        if model is not None:
            return f"models:/{model.model_id}", run_id, model.model_id
        # A model uploaded as a plain artifact folder (before raymlp logged LoggedModels).
        return RunsArtifactRepository.get_underlying_uri(uri), run_id, None
    if uri.startswith("models:/"):
        rest = uri[len("models:/"):]
        if "/" not in rest and "@" not in rest:
            model = mlc.get_logged_model(rest)
            return uri, model.source_run_id, model.model_id
    return uri, None, None


def _ensure_registered_model(mlc, name: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        mlc.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise


def _run_lineage(run) -> dict[str, str]:
    """A run's data lineage: its data hash tag and the digest of each dataset input."""
    out = {}
    training = []
    for dsi in (run.inputs.dataset_inputs if run.inputs else []):
        digest = dataset_digest(dsi.dataset)
        out[f"{TAG_DATASET_PREFIX}{dsi.dataset.name}"] = digest
        if any(t.key == "mlflow.data.context" and t.value == "training" for t in dsi.tags):
            training.append(digest)
    data_hash = run.data.tags.get(TAG_DATA_HASH) or (training[0] if training else None)
    if data_hash:
        out[TAG_DATA_HASH] = data_hash
    return out


def dataset_digest(dataset) -> str:
    """The full digest of an MLflow dataset entity that :meth:`Run.log_dataset` recorded."""
    try:
        return json.loads(dataset.profile or "{}").get(PROFILE_DIGEST) or dataset.digest
    except (TypeError, ValueError):  # a profile some other tool wrote
        return dataset.digest


def logged_model(run_id: str, name: str = "model"):
    """The LoggedModel called ``name`` whose source run is ``run_id`` (the latest), or None."""
    mlc = client()
    run = mlc.get_run(run_id)
    found = []
    token = None
    while True:
        page = mlc.search_logged_models([run.info.experiment_id],
                                        filter_string=f"name = '{name}'", page_token=token)
        found.extend(m for m in page if m.source_run_id == run_id)
        token = page.token
        if not token:
            break
    return max(found, key=lambda m: m.creation_timestamp, default=None)


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
    """Where a model version came from: source run, model URI, data hash and dataset digests.

    Returns:
        dict: ``raymlp.source_run_id``, ``raymlp.model_uri``, ``raymlp.data_hash`` and one
        ``raymlp.dataset.<name>`` entry (the digest) per dataset input of the source run.
    """
    mv = get_version(name, version=version)
    out = {k: v for k, v in mv.tags.items() if k.startswith("raymlp.")}
    if mv.run_id:
        out.setdefault(TAG_SOURCE_RUN, mv.run_id)
        for key, value in _run_lineage(get_run(mv.run_id)).items():
            out.setdefault(key, value)
    return out


def load_model(uri: str, *, flavor: str = "pyfunc"):
    """Load a model by URI (``models:/<id>``, ``models:/name@alias``, ``runs:/...``, a path).

    Args:
        uri: where the model is.
        flavor: ``"pyfunc"`` (default) or the model's native flavor (``"torch"``, ...).

    Raises:
        SpecError: an unknown flavor.
        TrackingError: the model cannot be loaded.
    """
    module = _flavor(flavor).module()
    client()
    try:
        return module.load_model(uri)
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
