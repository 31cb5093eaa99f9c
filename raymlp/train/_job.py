"""Running a :class:`~raymlp.train.TrainJob` on Ray Train: prepare -> fit -> finish.

The three phases are separate so a caller other than :meth:`TrainJob.run` (a tuning trial, a
pipeline step) can run them under its own MLflow run and console:

- :func:`prepare` checks what needs the runtime (the loop ships to workers, the cluster can
  hold them) before any Ray work, then opens the job's MLflow run (nested under a parent run
  when given) and records its params and training data;
- :func:`fit` trains on Ray Train while the metric relay logs each report; it bounds the
  training by ``timeout_s``;
- :func:`finish` logs the model (an MLflow LoggedModel), the kept checkpoints and the duration,
  ends the run and builds the :class:`TrainResult`.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raymlp import _config, _pickling, _ray_compat, _spec
from raymlp._imports import require
from raymlp._util import download_dir, ray_storage
from raymlp.errors import JobError, ResourceError, TimeoutError
from raymlp.train._backend import GenericBackendConfig
from raymlp.train._context import MODEL_DIR, PAYLOAD_KEY, _Payload, worker_main
from raymlp.train._relay import Forwarder, Relay
from raymlp.train._result import TrainResult

if TYPE_CHECKING:  # pragma: no cover
    from raymlp.tracking import Run
    from raymlp.train._spec import TrainJob

__all__ = ["Prepared", "finish", "fit", "prepare", "run"]

# Set on the run of a job stopped by its timeout_s.
TAG_TIMED_OUT = "raymlp.timed_out"


@dataclasses.dataclass
class Prepared:
    """A job checked and ready to train, with its MLflow run open.

    Attributes:
        job: the spec.
        job_id: unique name of this run of the job (storage folder, Ray Train run name).
        run: the job's MLflow run (RUNNING until :func:`fit` fails or :func:`finish` ends it).
        storage_root: where checkpoints and the model go.
        model_dir: where rank 0 saves the final model.
        timeout_s: the bound on training (None: none).
        duration_s: wall time of :func:`fit`, once it ran.
    """

    job: TrainJob
    job_id: str
    run: Run
    storage_root: str
    model_dir: str
    timeout_s: float | None = None
    duration_s: float = 0.0


def run(job: TrainJob, *, parent_run_id: str | None = None,
        timeout_s: float | None = None) -> TrainResult:
    """:meth:`TrainJob.run`: the three phases with progress on the console and a summary."""
    from raymlp import _console

    prepared = prepare(job, parent_run_id=parent_run_id, timeout_s=timeout_s)
    with _console.progress(f"training {job.name}", unit="epoch") as bar:
        bar.note(f"MLflow run {prepared.run.run_id}")
        last = [-1]

        def on_report(metrics: dict) -> None:
            epoch = int(metrics.get("epoch", last[0] + 1))
            if epoch <= last[0]:  # a restart repeats the epochs after the last checkpoint
                bar.note(f"restarted after a failure: from epoch {epoch} again")
            last[0] = epoch
            bar.update(max(0, epoch + 1 - bar.n),
                       **{k: v for k, v in metrics.items() if k != "epoch"})

        ray_result = fit(prepared, on_report=on_report)
    result = finish(prepared, ray_result)
    _console.summary(f"training {job.name} finished", _summary(result))
    return result


def prepare(job: TrainJob, *, parent_run_id: str | None = None,
            timeout_s: float | None = None) -> Prepared:
    """Check what needs the runtime, connect to Ray and open the job's MLflow run.

    Raises:
        SpecError: the loop (or a generic backend) cannot be pickled; a bad ``timeout_s``.
        TrackingError: there is no run ``parent_run_id``.
        DependencyError: the framework is not installed.
        ResourceError: the workers can never fit on the cluster (unless
            ``wait_for_resources``).
    """
    from raymlp import tracking
    from raymlp._runtime import init

    _spec.number("timeout_s", timeout_s, minimum=0, strict=True, optional=True)
    _spec.string("parent_run_id", parent_run_id, optional=True)
    _pickling.check_shippable("TrainJob.loop", job.loop)
    if job.framework == "generic":
        _pickling.check_shippable("TrainJob.backend", job.backend)
    else:
        # Only the workers import the framework: the driver checks that it is there.
        require(job.framework, purpose=f"framework={job.framework!r}", load=False)
    experiment = job.experiment
    if parent_run_id and experiment is None:
        # A nested run lives in its parent's experiment (MLflow shows it under the parent).
        parent = tracking.get_run(parent_run_id)
        experiment = tracking.client().get_experiment(parent.info.experiment_id).name
    init()
    if not job.wait_for_resources:
        check_resources(job)

    cfg = _config.get()
    job_id = f"{job.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    storage_root = (job.storage or cfg.storage_root).rstrip("/")
    tags = {**dict(job.tags), tracking.TAG_KIND: "train", "raymlp.job_id": job_id,
            "raymlp.storage": f"{storage_root}/{job_id}"}
    if job.data_hash:
        tags[tracking.TAG_DATA_HASH] = job.data_hash  # what register() copies for lineage
    run_ = tracking.start_run(job.name, experiment=experiment, params=job.params(),
                              tags=tags, parent_run_id=parent_run_id)
    try:
        if job.data_hash:
            run_.log_dataset(name=job.data_name, digest=job.data_hash, source=job.data_source,
                             context="training")
    except BaseException:
        run_.end("FAILED")
        raise
    return Prepared(job=job, job_id=job_id, run=run_, storage_root=storage_root,
                    model_dir=f"{storage_root}/{job_id}/{MODEL_DIR}", timeout_s=timeout_s)


def fit(prepared: Prepared, *, on_report: Callable[[dict], None] | None = None):
    """Train on Ray Train; each report is logged to the run and passed to ``on_report``.

    Returns:
        ray.train.Result: Ray Train's result (checkpoints, storage path).

    Raises:
        raymlp.errors.TimeoutError: training ran past ``timeout_s``: the workers were stopped
            and released, the run ended KILLED with the tag ``raymlp.timed_out``.
        JobError: training failed; the run ended FAILED.
    """
    run_ = prepared.run
    deadline = None if prepared.timeout_s is None else time.time() + prepared.timeout_s
    started = time.perf_counter()
    relay = Relay(run_, on_report=on_report)
    try:
        trainer = _trainer(prepared, Forwarder(run_.run_id, deadline))
        with relay:
            ray_result = trainer.fit()
    except KeyboardInterrupt:
        run_.end("KILLED")
        raise
    except Exception as exc:
        prepared.duration_s = time.perf_counter() - started
        if relay.timed_out or (deadline is not None and time.time() >= deadline):
            raise _timed_out(prepared) from None
        run_.end("FAILED")
        cause = _root_cause(exc)
        raise JobError(f"training job {prepared.job_id!r} failed: {cause}", cause=cause,
                       run_id=run_.run_id) from None
    # A normal return means the job finished: stopping it at the deadline ends the controller,
    # which fit() reports as an error.
    prepared.duration_s = time.perf_counter() - started
    return ray_result


def _timed_out(prepared: Prepared) -> TimeoutError:
    """End the run KILLED, saying why, and give the error to raise."""
    run_ = prepared.run
    bound = prepared.timeout_s
    run_.set_tags({TAG_TIMED_OUT: "true",
                   "raymlp.stop_reason": f"stopped after timeout_s={bound:g} s"})
    run_.end("KILLED")
    what = f"training job {prepared.job_id!r} to finish"
    return TimeoutError(f"timed out after {bound:g} s waiting for {what}; the job was stopped "
                        f"and its run {run_.run_id} ended KILLED", what=what, timeout_s=bound,
                        last_status="KILLED")


def finish(prepared: Prepared, ray_result) -> TrainResult:
    """Log the model, the kept checkpoints and the duration; end the run FINISHED.

    Raises:
        TrackingError: the model or the checkpoints could not be logged (the run ends FAILED).
    """
    run_ = prepared.run
    try:
        result = _finish(prepared, ray_result)
    except BaseException:
        run_.end("FAILED")
        raise
    run_.end("FINISHED")
    return result


def _finish(prepared: Prepared, ray_result) -> TrainResult:
    import fsspec

    from raymlp import tracking

    job, run_ = prepared.job, prepared.run
    model_uri = None
    flavor = tracking.flavor(job.resolved_flavor).name
    fs, root = fsspec.core.url_to_fs(prepared.model_dir)
    run_.log_metrics({"raymlp.duration_s": prepared.duration_s})
    if fs.exists(root):
        # The worker saved a complete MLflow model (flavor, signature, example, requirements);
        # it is logged as it is, so the driver never loads the framework's model.
        with tempfile.TemporaryDirectory(prefix="raymlp-model-") as d:
            local = download_dir(prepared.model_dir, Path(d) / MODEL_DIR)
            flavor = _saved_flavor(local, flavor)
            model_uri = run_.log_model_dir(local, name=MODEL_DIR)
    kept = [c for c, _ in (ray_result.best_checkpoints or [])]
    for ckpt in kept:
        with ckpt.as_directory() as d:
            run_.log_artifact(d, f"checkpoints/{Path(ckpt.path).name}")
    run_.set_tags({"raymlp.model_uri": model_uri or ""})
    history = _history(run_.run_id)
    best = None
    if job.checkpointing.score and ray_result.best_checkpoints:
        best = ray_result.get_best_checkpoint(job.checkpointing.score, job.checkpointing.mode)
    elif kept:
        best = kept[-1]
    return TrainResult(
        metrics=history[-1] if history else {}, history=history,
        checkpoint=ray_result.checkpoint, best_checkpoint=best, checkpoints=kept,
        run_id=run_.run_id, model_uri=model_uri, path=ray_result.path,
        duration_s=prepared.duration_s, flavor=flavor)


def _saved_flavor(local: Path, default: str) -> str:
    """The flavor the loop saved the model with (it may name its own in ``ctx.log_model``)."""
    from raymlp import tracking

    meta = tracking.model_metadata(local)
    named = (meta.metadata or {}).get("raymlp.flavor")
    if named:
        return named
    native = [f for f in meta.flavors if f != "python_function"]
    return tracking.flavor(native[0]).name if native else default


def _history(run_id: str) -> list[dict[str, float]]:
    """Per-epoch metrics; an epoch run twice (after a restart) keeps its latest values."""
    from raymlp import tracking

    keys = [k for k in tracking.get_run(run_id).data.metrics if not k.startswith("raymlp.")]
    by_step: dict[int, dict[str, float]] = {}
    for key in keys:
        for step, value in tracking.metric_history(run_id, key):
            by_step.setdefault(step, {})[key] = value
    return [by_step[s] for s in sorted(by_step)]


def _summary(result: TrainResult) -> dict[str, Any]:
    from raymlp import _console

    fields: dict[str, Any] = {"run id": result.run_id}
    fields.update({k: v for k, v in result.metrics.items() if k != "epoch"})
    fields["epochs"] = len(result.history)
    fields["duration"] = f"{result.duration_s:.1f} s"
    fields["model"] = result.model_uri or "none logged (call ctx.log_model in the loop)"
    return {**fields, **_console.where_to_look()}


# -- runtime checks ----------------------------------------------------------------------------

def check_resources(job: TrainJob) -> None:
    """Fail fast when the cluster can never hold the workers (Ray would wait forever).

    Raises:
        ResourceError: naming the field that asks too much.
    """
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    need = job.scaling.per_worker()
    for key, amount in need.items():
        have = max((n.get(key, 0.0) for n in nodes), default=0.0)
        if amount > have:
            field = job.scaling.field_of(key)
            what = "has none" if have == 0 else f"has at most {have:g} on any node"
            raise ResourceError(
                f"{field}={amount:g} cannot be met: the Ray cluster {what} of {key!r}",
                field=field, value=amount, allowed=f"at most {have:g}")
    asked = {k: v for k, v in need.items() if v > 0}
    if not asked:
        return
    slots = sum(int(min(n.get(k, 0.0) / v for k, v in asked.items())) for n in nodes)
    if slots < job.scaling.workers:
        raise ResourceError(
            f"Scaling.workers={job.scaling.workers} with {need} each cannot fit: the Ray cluster "
            f"holds at most {slots} such workers at once", field="Scaling.workers",
            value=job.scaling.workers, allowed=f"at most {slots}")


# -- Ray Train ---------------------------------------------------------------------------------

def _trainer(prepared: Prepared, forwarder: Forwarder):
    import ray.train

    from raymlp import _console

    job = prepared.job
    payload = _Payload(loop=job.loop, config=dict(job.config), framework=job.framework,
                       every=job.checkpointing.every, model_dir=prepared.model_dir,
                       flavor=job.resolved_flavor,
                       backend=job.backend if job.framework == "generic" else None)
    storage_path, filesystem = ray_storage(prepared.storage_root)
    ck = job.checkpointing
    run_config = ray.train.RunConfig(
        name=prepared.job_id, storage_path=storage_path, storage_filesystem=filesystem,
        checkpoint_config=ray.train.CheckpointConfig(
            num_to_keep=ck.keep, checkpoint_score_attribute=ck.score,
            checkpoint_score_order=ck.mode),
        failure_config=ray.train.FailureConfig(max_failures=job.max_failures),
        callbacks=[forwarder],
        logging_config=ray.train.LoggingConfig(log_level=_console.engine_log_level()),
    )
    s = job.scaling
    scaling = ray.train.ScalingConfig(
        num_workers=s.workers, use_gpu=bool(s.gpus), resources_per_worker=s.per_worker(),
        placement_strategy=s.placement_strategy)
    common = {"train_loop_config": {PAYLOAD_KEY: payload}, "scaling_config": scaling,
              "run_config": run_config, "datasets": dict(job.datasets) or None}
    if job.framework == "torch":
        from raymlp.train._torch import TorchBackendConfig

        return _ray_compat.DataParallelTrainer(
            worker_main, backend_config=TorchBackendConfig(job.resolved_backend), **common)
    if job.framework == "tensorflow":
        from ray.train.tensorflow import TensorflowTrainer

        return TensorflowTrainer(worker_main, **common)
    if job.framework == "xgboost":
        from ray.train.xgboost import XGBoostTrainer

        return XGBoostTrainer(worker_main, **common)
    return _ray_compat.DataParallelTrainer(worker_main, backend_config=GenericBackendConfig(),
                                           **common)


def _root_cause(exc: BaseException) -> str:
    seen = exc
    while seen.__cause__ is not None:
        seen = seen.__cause__
    return f"{type(seen).__name__}: {seen}"
