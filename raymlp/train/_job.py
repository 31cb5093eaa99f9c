"""A training job: its spec (:class:`TrainJob`), its run on Ray Train, and its result."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

from ray.train.v2.api.callback import UserCallback

from raymlp import _config
from raymlp._imports import require
from raymlp.errors import JobError, ResourceError, SpecError
from raymlp.train._backend import Backend, GenericBackendConfig
from raymlp.train._context import MODEL_DIR, PAYLOAD_KEY, _Payload, download_dir, worker_main
from raymlp.train._spec import FRAMEWORKS, TORCH_BACKENDS, Checkpointing, Scaling, check_loop

logger = logging.getLogger(__name__)

_DEFAULT_FLAVOR = {"torch": "torch", "tensorflow": "tensorflow", "xgboost": "xgboost",
                   "generic": "pyfunc"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainJob:
    """A distributed training job: the loop, the framework, the workers, and its bookkeeping.

    Args:
        loop: ``loop(ctx: TrainContext)``, run in every worker. It must be picklable.
        framework: ``"torch"`` (DistributedDataParallel), ``"tensorflow"``
            (MultiWorkerMirroredStrategy), ``"xgboost"`` (distributed), or ``"generic"`` with a
            :class:`Backend` of your own.
        scaling: workers and resources per worker.
        config: hyperparameters and settings handed to the loop as ``ctx.config``; logged as
            the run's params.
        backend: torch: ``"nccl"`` or ``"gloo"`` (default: NCCL when workers have GPUs, Gloo
            otherwise); generic: a :class:`Backend` instance.
        checkpointing: checkpoint cadence and retention.
        max_failures: restarts allowed after a worker failure; each resumes from the latest
            checkpoint.
        name: the job's name (MLflow run name and storage folder prefix).
        experiment: MLflow experiment (default: the configured one).
        storage: root for checkpoints and the model: a path or any fsspec URL (default: the
            configured storage root).
        datasets: Ray Datasets, sharded across workers (``ctx.dataset(name)``).
        data_hash: content hash of the training data, recorded for lineage
            (see :func:`raymlp.tracking.data_hash`).
        flavor: the MLflow flavor of the final model (default: the framework's).
        tags: extra MLflow run tags.
        wait_for_resources: wait for an autoscaler when the workers do not fit the cluster now,
            instead of failing at once.

    Example:
        >>> job = TrainJob(loop=loop, framework="torch", scaling=Scaling(workers=2),
        ...                config={"lr": 0.01, "epochs": 5})
        >>> result = job.run()
        >>> result.register("digits", alias="champion")
    """

    loop: Callable[..., Any]
    framework: str = "torch"
    scaling: Scaling = dataclasses.field(default_factory=Scaling)
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    backend: str | Backend | None = None
    checkpointing: Checkpointing = dataclasses.field(default_factory=Checkpointing)
    max_failures: int = 0
    name: str = "train"
    experiment: str | None = None
    storage: str | None = None
    datasets: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    data_hash: str | None = None
    flavor: str | None = None
    tags: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    wait_for_resources: bool = False

    def __post_init__(self) -> None:
        if self.framework not in FRAMEWORKS:
            raise SpecError(f"TrainJob.framework must be one of {list(FRAMEWORKS)}, "
                            f"got framework={self.framework!r}",
                            field="TrainJob.framework", value=self.framework)
        if not isinstance(self.scaling, Scaling):
            raise SpecError(f"TrainJob.scaling must be a raymlp.train.Scaling, got {self.scaling!r}",
                            field="TrainJob.scaling", value=self.scaling)
        if not isinstance(self.checkpointing, Checkpointing):
            raise SpecError("TrainJob.checkpointing must be a raymlp.train.Checkpointing, "
                            f"got {self.checkpointing!r}",
                            field="TrainJob.checkpointing", value=self.checkpointing)
        if not isinstance(self.config, Mapping):
            raise SpecError(f"TrainJob.config must be a mapping, got {self.config!r}",
                            field="TrainJob.config", value=self.config)
        if (not isinstance(self.max_failures, int) or isinstance(self.max_failures, bool)
                or self.max_failures < -1):
            raise SpecError("TrainJob.max_failures must be an integer >= 0 (or -1 for unlimited), "
                            f"got max_failures={self.max_failures!r}",
                            field="TrainJob.max_failures", value=self.max_failures)
        if not isinstance(self.name, str) or not self.name.strip():
            raise SpecError(f"TrainJob.name must be a non-empty string, got {self.name!r}",
                            field="TrainJob.name", value=self.name)
        self._check_backend()
        if self.flavor is not None:
            from raymlp.tracking._store import _FLAVORS

            if self.flavor not in _FLAVORS:
                raise SpecError(f"TrainJob.flavor must be one of {sorted(_FLAVORS)}, "
                                f"got {self.flavor!r}", field="TrainJob.flavor", value=self.flavor)
        check_loop(self.loop)

    def _check_backend(self) -> None:
        b = self.backend
        if self.framework == "generic":
            if not isinstance(b, Backend):
                raise SpecError("TrainJob.backend must be a raymlp.train.Backend instance when "
                                f"framework='generic', got backend={b!r}",
                                field="TrainJob.backend", value=b)
            check_loop(b.setup)
        elif self.framework == "torch":
            if b is not None and b not in TORCH_BACKENDS:
                raise SpecError(f"TrainJob.backend for torch must be one of {list(TORCH_BACKENDS)} "
                                f"or None (automatic), got backend={b!r}",
                                field="TrainJob.backend", value=b)
            if b == "nccl" and not self.scaling.gpus_per_worker:
                raise SpecError("TrainJob.backend='nccl' needs GPUs: set "
                                "Scaling.gpus_per_worker > 0 or use backend='gloo'",
                                field="TrainJob.backend", value=b)
        elif b is not None:
            raise SpecError(f"TrainJob.backend applies to framework 'torch' or 'generic', not "
                            f"{self.framework!r}; got backend={b!r}",
                            field="TrainJob.backend", value=b)

    @property
    def resolved_backend(self) -> str:
        """The communication backend the job uses (``nccl``/``gloo`` for torch)."""
        if self.framework == "torch":
            return self.backend or ("nccl" if self.scaling.gpus_per_worker else "gloo")
        if self.framework == "generic":
            return getattr(self.backend, "name", "generic")
        return {"tensorflow": "MultiWorkerMirroredStrategy", "xgboost": "rabit"}[self.framework]

    def params(self) -> dict[str, Any]:
        """What the MLflow run records as params."""
        s = self.scaling
        return {
            **dict(self.config),
            "raymlp.framework": self.framework,
            "raymlp.backend": self.resolved_backend,
            "raymlp.workers": s.workers,
            "raymlp.cpus_per_worker": s.cpus_per_worker,
            "raymlp.gpus_per_worker": s.gpus_per_worker,
            "raymlp.max_failures": self.max_failures,
            "raymlp.checkpoint_every": self.checkpointing.every,
        }

    def run(self) -> "TrainResult":
        """Run the job to completion on Ray (started or connected by :func:`raymlp.init`).

        Returns:
            TrainResult: metrics, checkpoints, the MLflow run id and the model URI.

        Raises:
            ResourceError: the workers can never fit on the cluster (raised before any work).
            JobError: training failed (after ``max_failures`` restarts).
        """
        return _run(self)


def _check_resources(job: TrainJob) -> None:
    """Fail fast when the cluster can never hold the workers (Ray would wait forever)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    need = job.scaling.per_worker()
    field = {"CPU": "cpus_per_worker", "GPU": "gpus_per_worker", "memory": "memory_per_worker"}
    for key, amount in need.items():
        have = max((n.get(key, 0.0) for n in nodes), default=0.0)
        if amount > have:
            name = f"Scaling.{field.get(key, f'resources_per_worker[{key!r}]')}"
            what = "has none" if have == 0 else f"has at most {have:g} on any node"
            raise ResourceError(
                f"{name}={amount:g} cannot be met: the Ray cluster {what} of {key!r}",
                field=name, value=amount)
    asked = {k: v for k, v in need.items() if v > 0}
    if not asked:
        return
    slots = sum(int(min(n.get(k, 0.0) / v for k, v in asked.items())) for n in nodes)
    if slots < job.scaling.workers:
        raise ResourceError(
            f"Scaling.workers={job.scaling.workers} with {need} each cannot fit: the Ray cluster "
            f"holds at most {slots} such workers at once", field="Scaling.workers",
            value=job.scaling.workers)


class _TrackingCallback(UserCallback):
    """Runs in Ray Train's controller: hands every report's metrics to the driver's relay.

    The controller does not touch MLflow itself: importing mlflow and opening the store there took
    ~2.5 s of every job, inside the control loop that also consumes the workers' reports (each
    worker's next ``ray.train.report`` waited for it). The records go through the GCS key-value
    store, which the controller and the driver both reach on any cluster, to :class:`_Relay`.
    """

    def __init__(self, run_id: str):
        self.run_id = run_id
        self._seq = 0

    def _send(self, record: dict) -> None:
        from ray.experimental import internal_kv

        self._seq += 1
        # Time first: keys stay ordered even if Ray restarts the controller (and _seq).
        key = f"{self.run_id}/{time.time_ns():020d}-{self._seq:08d}"
        internal_kv._internal_kv_put(key, json.dumps(record),
                                     namespace=_RELAY_NAMESPACE)

    def after_report(self, run_context, metrics, checkpoint) -> None:
        m = metrics[0] if metrics else {}
        self._send({"metrics": {k: v for k, v in m.items() if isinstance(v, (int, float))},
                    "checkpoint": checkpoint.path if checkpoint is not None else None})

    def after_exception(self, run_context, worker_exceptions) -> None:
        text = "; ".join(f"rank {r}: {e!r}" for r, e in sorted(worker_exceptions.items()))
        self._send({"error": text[:5000]})


_RELAY_NAMESPACE = "raymlp-train"


class _Relay:
    """Runs in the driver while the job trains: logs the controller's records to the MLflow run."""

    def __init__(self, run, interval_s: float = 0.25):
        self._run = run
        self._interval_s = interval_s
        self._reports = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="raymlp-tracking", daemon=True)

    def __enter__(self) -> "_Relay":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._drain()  # what the controller sent after the last poll

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._drain()
            except Exception as exc:  # keep relaying; the next drain retries what is left
                logger.warning("raymlp: logging training metrics to MLflow failed: %s", exc)

    def _drain(self) -> None:
        from ray.experimental import internal_kv

        prefix = f"{self._run.run_id}/"
        for key in sorted(internal_kv._internal_kv_list(prefix, namespace=_RELAY_NAMESPACE)):
            value = internal_kv._internal_kv_get(key, namespace=_RELAY_NAMESPACE)
            internal_kv._internal_kv_del(key, namespace=_RELAY_NAMESPACE)
            if value is not None:
                self._log(json.loads(value))

    def _log(self, record: dict) -> None:
        if "error" in record:
            self._run.set_tags({"raymlp.last_worker_error": record["error"]})
            return
        m = record["metrics"]
        step = int(m.get("epoch", self._reports))
        self._reports += 1
        self._run.log_metrics(m, step=step)
        if record["checkpoint"] is not None:
            self._run.set_tags({"raymlp.latest_checkpoint": record["checkpoint"]})


def _storage(root: str):
    """(storage_path, filesystem) for Ray Train: local paths as they are, URLs via fsspec."""
    if "://" not in root or root.startswith("file://"):
        path = Path(root.removeprefix("file://")).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return str(path), None
    import fsspec
    import pyarrow.fs

    fs, path = fsspec.core.url_to_fs(root)
    return path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def _trainer(job: TrainJob, payload: _Payload, run_config):
    import ray.train
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    s = job.scaling
    scaling = ray.train.ScalingConfig(
        num_workers=s.workers, use_gpu=bool(s.gpus_per_worker),
        resources_per_worker=job.scaling.per_worker(), placement_strategy=s.placement_strategy)
    common = dict(train_loop_config={PAYLOAD_KEY: payload}, scaling_config=scaling,
                  run_config=run_config, datasets=dict(job.datasets) or None)
    if job.framework == "torch":
        require("torch", purpose="framework='torch'", load=False)
        from raymlp.train._torch import TorchBackendConfig

        return DataParallelTrainer(
            worker_main, backend_config=TorchBackendConfig(job.resolved_backend), **common)
    if job.framework == "tensorflow":
        require("tensorflow", purpose="framework='tensorflow'", load=False)
        from ray.train.tensorflow import TensorflowTrainer

        return TensorflowTrainer(worker_main, **common)
    if job.framework == "xgboost":
        require("xgboost", purpose="framework='xgboost'", load=False)
        from ray.train.xgboost import XGBoostTrainer

        return XGBoostTrainer(worker_main, **common)
    return DataParallelTrainer(worker_main, backend_config=GenericBackendConfig(), **common)


def _run(job: TrainJob) -> "TrainResult":
    import ray.train

    from raymlp._runtime import init
    from raymlp.tracking import _store

    init()
    if not job.wait_for_resources:
        _check_resources(job)
    cfg = _config.get()
    flavor = job.flavor or _DEFAULT_FLAVOR[job.framework]
    job_id = f"{job.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    storage_root = job.storage or cfg.storage_root
    storage_path, filesystem = _storage(storage_root)
    model_dir = f"{storage_root.rstrip('/')}/{job_id}/{MODEL_DIR}"

    tags = {**dict(job.tags), _store.TAG_KIND: "train", "raymlp.job_id": job_id,
            "raymlp.storage": f"{storage_root.rstrip('/')}/{job_id}"}
    if job.data_hash:
        tags[_store.TAG_DATA_HASH] = job.data_hash
    run = _store.start_run(job.name, experiment=job.experiment, params=job.params(), tags=tags)

    payload = _Payload(loop=job.loop, config=dict(job.config), framework=job.framework,
                       every=job.checkpointing.every, model_dir=model_dir, flavor=flavor,
                       backend=job.backend if job.framework == "generic" else None)
    ck = job.checkpointing
    run_config = ray.train.RunConfig(
        name=job_id, storage_path=storage_path, storage_filesystem=filesystem,
        checkpoint_config=ray.train.CheckpointConfig(
            num_to_keep=ck.keep, checkpoint_score_attribute=ck.score,
            checkpoint_score_order=ck.mode),
        failure_config=ray.train.FailureConfig(max_failures=job.max_failures),
        callbacks=[_TrackingCallback(run.run_id)],
        logging_config=ray.train.LoggingConfig(log_level="WARNING"),
    )
    started = time.perf_counter()
    try:
        with _cluster_address_for_train(), _Relay(run):
            ray_result = _trainer(job, payload, run_config).fit()
    except KeyboardInterrupt:
        run.end("KILLED")
        raise
    except Exception as exc:
        run.end("FAILED")
        cause = _root_cause(exc)
        raise JobError(f"training job {job_id!r} failed: {cause}", cause=cause,
                       run_id=run.run_id) from None
    duration = time.perf_counter() - started
    try:
        result = _finish(job, run, ray_result, model_dir, flavor, duration)
    except BaseException:
        run.end("FAILED")
        raise
    run.end("FINISHED")
    return result


@contextlib.contextmanager
def _cluster_address_for_train():
    """Tell Ray Train's controller (and the actors it starts) which cluster they are on.

    Its placement-group cleaner finds the cluster through RAY_ADDRESS; without it, a second Ray
    instance on the same machine (another notebook, a test head) makes that lookup fail.
    """
    import os

    import ray
    from ray.train.v2._internal import constants

    constants.ENV_VARS_TO_PROPAGATE.add("RAY_ADDRESS")
    previous = os.environ.get("RAY_ADDRESS")
    if not previous:
        os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    try:
        yield
    finally:
        if not previous:
            os.environ.pop("RAY_ADDRESS", None)


def _root_cause(exc: BaseException) -> str:
    seen = exc
    while seen.__cause__ is not None:
        seen = seen.__cause__
    return f"{type(seen).__name__}: {seen}"


def _finish(job, run, ray_result, model_dir: str, flavor: str, duration: float) -> "TrainResult":
    import fsspec

    model_uri = None
    fs, root = fsspec.core.url_to_fs(model_dir)
    if fs.exists(root):
        # The worker saved a complete MLflow model (flavor, signature, example, requirements);
        # it is logged as it is, so the driver never loads the framework's model.
        from mlflow.models import Model

        with tempfile.TemporaryDirectory(prefix="raymlp-model-") as d:
            local = download_dir(model_dir, Path(d) / MODEL_DIR)
            run.log_artifact(local, MODEL_DIR)
            # The loop may have chosen a flavor of its own in ctx.log_model.
            native = [f for f in Model.load(str(local)).flavors if f != "python_function"]
            flavor = native[0] if native else "pyfunc"
        model_uri = f"runs:/{run.run_id}/{MODEL_DIR}"
    kept = [c for c, _ in (ray_result.best_checkpoints or [])]
    for ckpt in kept:
        with ckpt.as_directory() as d:
            run.log_artifact(d, f"checkpoints/{Path(ckpt.path).name}")
    run.log_metrics({"raymlp.duration_s": duration})
    run.set_tags({"raymlp.model_uri": model_uri or ""})
    history = _history(run.run_id)
    best = None
    if job.checkpointing.score and ray_result.best_checkpoints:
        best = ray_result.get_best_checkpoint(job.checkpointing.score, job.checkpointing.mode)
    elif kept:
        best = kept[-1]
    return TrainResult(
        metrics=history[-1] if history else {}, history=history,
        checkpoint=ray_result.checkpoint, best_checkpoint=best, checkpoints=kept,
        run_id=run.run_id, model_uri=model_uri, path=ray_result.path, duration_s=duration,
        flavor=flavor)


def _history(run_id: str) -> list[dict[str, float]]:
    """Per-epoch metrics; an epoch run twice (after a restart) keeps its latest values."""
    from raymlp.tracking import _store

    keys = [k for k in _store.get_run(run_id).data.metrics if not k.startswith("raymlp.")]
    by_step: dict[int, dict[str, float]] = {}
    for key in keys:
        for step, value in _store.metric_history(run_id, key):
            by_step.setdefault(step, {})[key] = value
    return [by_step[s] for s in sorted(by_step)]


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished job left behind.

    Attributes:
        metrics: the last epoch's metrics (rank 0).
        history: per-epoch metrics, oldest first.
        checkpoint: the latest checkpoint (a ``ray.train.Checkpoint``), or None.
        best_checkpoint: the best by ``Checkpointing.score``, else the latest.
        checkpoints: every checkpoint kept.
        run_id: the job's MLflow run.
        model_uri: the logged model's URI (None when the loop logged no model).
        path: the job's storage folder.
        duration_s: wall time of the training itself.
        flavor: the model's MLflow flavor.
    """

    metrics: dict
    history: list
    checkpoint: Any
    best_checkpoint: Any
    checkpoints: list
    run_id: str
    model_uri: str | None
    path: str
    duration_s: float
    flavor: str

    def register(self, name: str, alias: str | None = None, *, tags: Mapping[str, Any] | None = None):
        """Register the model as a new version of ``name`` (and point ``alias`` at it).

        Returns:
            ModelVersion: the new version; ``models:/name@alias`` loads it.
        """
        from raymlp.tracking import _store

        if not self.model_uri:
            raise JobError("this job logged no model: call ctx.log_model(model, input_example) "
                           "at the end of the training loop")
        return _store.register_model(self.model_uri, name, alias=alias, tags=tags)

    def load_model(self, flavor: str | None = None):
        """Load the logged model, natively (default) or as ``"pyfunc"``."""
        from raymlp.tracking import _store

        if not self.model_uri:
            raise JobError("this job logged no model")
        return _store.load_model(self.model_uri, flavor=flavor or self.flavor)

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{k}</td><td>{v:.4g}</td></tr>" for k, v in self.metrics.items())
        return (f"<b>TrainResult</b> run <code>{self.run_id}</code>, {len(self.history)} epochs "
                f"in {self.duration_s:.1f} s, model <code>{self.model_uri}</code>"
                f"<table>{rows}</table>")
