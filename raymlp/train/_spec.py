"""Training job specs: frozen, keyword-only dataclasses whose construction checks values only.

Every check goes through :mod:`raymlp._spec`, so a bad value gets the same
:class:`~raymlp.errors.SpecError` here as in a serving or cluster spec. What needs the runtime or
the user's code at work (pickling the loop to ship it, the cluster's resources, installed
frameworks) is checked by :meth:`TrainJob.run` (``raymlp.train._job.prepare``), still before
any Ray work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from raymlp import _spec
from raymlp.train import _job
from raymlp.train._backend import Backend

FRAMEWORKS = ("torch", "tensorflow", "xgboost", "generic")
TORCH_BACKENDS = ("nccl", "gloo")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
# The flavor a job's final model is saved with when the loop names none (raymlp.tracking's names).
DEFAULT_FLAVOR = {"torch": "torch", "tensorflow": "tensorflow", "xgboost": "xgboost",
                  "generic": "pyfunc"}
_FIELD_OF_RESOURCE = {"CPU": "cpus", "GPU": "gpus", "memory": "memory"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scaling:
    """How many workers a job runs and what each one gets.

    Args:
        workers: number of training workers (>= 1).
        cpus: CPUs reserved per worker.
        gpus: GPUs per worker (fractions allowed); > 0 selects NCCL for torch.
        memory: bytes of memory reserved per worker (None: no reservation).
        resources: custom Ray resources per worker, e.g. ``{"TPU": 4}``.
        placement_strategy: one of PACK, SPREAD, STRICT_PACK, STRICT_SPREAD.

    Example:
        >>> Scaling(workers=4, gpus=1)
    """

    workers: int = 2
    cpus: float = 1
    gpus: float = 0
    memory: int | None = None
    resources: Mapping[str, float] = dataclasses.field(default_factory=dict)
    placement_strategy: str = "PACK"

    def __post_init__(self) -> None:
        _spec.integer("Scaling.workers", self.workers, minimum=1)
        _spec.number("Scaling.cpus", self.cpus, minimum=0)
        _spec.number("Scaling.gpus", self.gpus, minimum=0)
        _spec.integer("Scaling.memory", self.memory, minimum=1, optional=True)
        _spec.mapping("Scaling.resources", self.resources)
        for key, amount in self.resources.items():
            field = f"Scaling.resources[{key!r}]"
            if key in _FIELD_OF_RESOURCE:
                raise _spec.fail(field, amount, "a custom resource (set "
                                 f"Scaling.{_FIELD_OF_RESOURCE[key]} for {key!r} instead)")
            _spec.number(field, amount, minimum=0)
        _spec.choice("Scaling.placement_strategy", self.placement_strategy, PLACEMENT_STRATEGIES)

    def per_worker(self) -> dict[str, float]:
        """The Ray resources one worker asks for."""
        res = {"CPU": float(self.cpus)}
        if self.gpus:
            res["GPU"] = float(self.gpus)
        if self.memory:
            res["memory"] = float(self.memory)
        res.update({k: float(v) for k, v in self.resources.items()})
        return res

    def field_of(self, resource: str) -> str:
        """The field that asks for Ray resource ``resource`` (``"GPU"``: ``Scaling.gpus``)."""
        if resource in _FIELD_OF_RESOURCE:
            return f"Scaling.{_FIELD_OF_RESOURCE[resource]}"
        return f"Scaling.resources[{resource!r}]"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Checkpointing:
    """When checkpoints are taken and how many are kept.

    Args:
        every: take a checkpoint every ``every`` epochs (and always at the last epoch).
        keep: how many checkpoints to keep (None: all).
        score: a reported metric that ranks checkpoints for ``keep`` and ``best``
            (None: the most recent ones are kept).
        mode: ``"max"`` or ``"min"``: which end of ``score`` is best.
    """

    every: int = 1
    keep: int | None = 2
    score: str | None = None
    mode: str = "max"

    def __post_init__(self) -> None:
        _spec.integer("Checkpointing.every", self.every, minimum=1)
        _spec.integer("Checkpointing.keep", self.keep, minimum=1, optional=True)
        _spec.string("Checkpointing.score", self.score, optional=True, allowed="a metric name")
        _spec.choice("Checkpointing.mode", self.mode, ("max", "min"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainJob:
    """A distributed training job: the loop, the framework, the workers, and its bookkeeping.

    Building one checks values only; :meth:`run` checks what needs the runtime (the loop can be
    pickled, the cluster can hold the workers) before any Ray work, then trains.

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
        max_failures: restarts allowed after a worker failure (-1: unlimited); each resumes from
            the latest checkpoint.
        name: the job's name (MLflow run name and storage folder prefix).
        experiment: MLflow experiment (default: the parent run's, else the configured one).
        storage: root for checkpoints and the model: a path or any fsspec URL (default: the
            configured storage root).
        datasets: Ray Datasets, sharded across workers (``ctx.dataset(name)``). Python only: a
            job file cannot hold a dataset.
        data_hash: digest of the training data (see :func:`raymlp.tracking.data_hash`); when
            set, the run records the data as an MLflow dataset input (``data_name``,
            ``data_hash``, ``data_source``) for lineage.
        data_name: the dataset input's name.
        data_source: where the data came from (a URI or path), recorded with the input.
        flavor: the MLflow flavor of the final model (default: the framework's).
        tags: extra MLflow run tags.
        wait_for_resources: wait for an autoscaler when the workers do not fit the cluster now,
            instead of failing at once.

    Example:
        >>> job = TrainJob(loop=loop, framework="torch", scaling=Scaling(workers=2),
        ...                config={"lr": 0.01, "epochs": 5})
        >>> result = job.run(timeout_s=3600)
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
    data_name: str = "train"
    data_source: str | None = None
    flavor: str | None = None
    tags: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    wait_for_resources: bool = False

    def __post_init__(self) -> None:
        if not callable(self.loop):
            raise _spec.fail("TrainJob.loop", self.loop, "a callable taking the train context")
        _spec.choice("TrainJob.framework", self.framework, FRAMEWORKS)
        _spec.instance("TrainJob.scaling", self.scaling, Scaling, what="raymlp.train.Scaling")
        _spec.instance("TrainJob.checkpointing", self.checkpointing, Checkpointing,
                       what="raymlp.train.Checkpointing")
        _spec.mapping("TrainJob.config", self.config)
        _spec.integer("TrainJob.max_failures", self.max_failures, minimum=-1)
        _spec.string("TrainJob.name", self.name)
        _spec.string("TrainJob.experiment", self.experiment, optional=True)
        _spec.string("TrainJob.storage", self.storage, optional=True,
                     allowed="a path or fsspec URL")
        _spec.mapping("TrainJob.datasets", self.datasets)
        _spec.string("TrainJob.data_hash", self.data_hash, optional=True)
        _spec.string("TrainJob.data_name", self.data_name)
        _spec.string("TrainJob.data_source", self.data_source, optional=True)
        if self.flavor is not None:
            from raymlp import tracking

            tracking.flavor(self.flavor, field="TrainJob.flavor")
        _spec.mapping("TrainJob.tags", self.tags)
        _spec.boolean("TrainJob.wait_for_resources", self.wait_for_resources)
        self._check_backend()

    def _check_backend(self) -> None:
        b = self.backend
        if self.framework == "generic":
            _spec.instance("TrainJob.backend", b, Backend,
                           what="a raymlp.train.Backend instance (framework='generic')")
        elif self.framework == "torch":
            _spec.choice("TrainJob.backend", b, TORCH_BACKENDS, optional=True)
            if b == "nccl" and not self.scaling.gpus:
                raise _spec.fail("TrainJob.backend", b,
                                 "'gloo' or None without GPUs ('nccl' needs Scaling.gpus > 0)")
        elif b is not None:
            raise _spec.fail("TrainJob.backend", b,
                             f"None for framework={self.framework!r} (a backend applies to "
                             "'torch' and 'generic')")

    @property
    def resolved_backend(self) -> str:
        """The communication backend the job uses (``nccl``/``gloo`` for torch)."""
        if self.framework == "torch":
            return self.backend or ("nccl" if self.scaling.gpus else "gloo")
        if self.framework == "generic":
            return getattr(self.backend, "name", "generic")
        return {"tensorflow": "MultiWorkerMirroredStrategy", "xgboost": "rabit"}[self.framework]

    @property
    def resolved_flavor(self) -> str:
        """The flavor the final model is saved with unless the loop names one."""
        return self.flavor or DEFAULT_FLAVOR[self.framework]

    def params(self) -> dict[str, Any]:
        """What the MLflow run records as params."""
        s = self.scaling
        return {
            **dict(self.config),
            "raymlp.framework": self.framework,
            "raymlp.backend": self.resolved_backend,
            "raymlp.workers": s.workers,
            "raymlp.cpus": s.cpus,
            "raymlp.gpus": s.gpus,
            "raymlp.max_failures": self.max_failures,
            "raymlp.checkpoint_every": self.checkpointing.every,
        }

    def run(self, *, parent_run_id: str | None = None, timeout_s: float | None = None):
        """Run the job to completion on Ray (started or connected by :func:`raymlp.init`).

        Shows progress (one line per reported epoch) and ends with a summary.

        Args:
            parent_run_id: nest the job's MLflow run under this run (e.g. a tuning study's).
            timeout_s: stop the job when training runs longer than this many seconds.

        Returns:
            TrainResult: metrics, checkpoints, the MLflow run id and the model URI.

        Raises:
            SpecError: the loop (or backend) cannot be shipped to the workers.
            ResourceError: the workers can never fit on the cluster (raised before any work).
            raymlp.errors.TimeoutError: ``timeout_s`` ran out; the workers are released and the
                run ends KILLED with the tag ``raymlp.timed_out``.
            JobError: training failed (after ``max_failures`` restarts).
        """
        return _job.run(self, parent_run_id=parent_run_id, timeout_s=timeout_s)

