"""Training job specs: frozen, keyword-only dataclasses checked in ``__post_init__``."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

from raymlp.errors import SpecError

FRAMEWORKS = ("torch", "tensorflow", "xgboost", "generic")
TORCH_BACKENDS = ("nccl", "gloo")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def _number(owner: str, name: str, value: Any, *, minimum: float, integer: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if not ok or value < minimum:
        kind = "an integer" if integer else "a number"
        raise SpecError(f"{owner}.{name} must be {kind} >= {minimum:g}, got {name}={value!r}",
                        field=f"{owner}.{name}", value=value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scaling:
    """How many workers a job runs and what each one gets.

    Args:
        workers: number of training workers (>= 1).
        cpus_per_worker: CPUs reserved per worker.
        gpus_per_worker: GPUs per worker (fractions allowed); > 0 selects NCCL for torch.
        memory_per_worker: bytes of memory reserved per worker (None: no reservation).
        resources_per_worker: custom Ray resources per worker, e.g. ``{"TPU": 4}``.
        placement_strategy: one of PACK, SPREAD, STRICT_PACK, STRICT_SPREAD.

    Example:
        >>> Scaling(workers=4, gpus_per_worker=1)
    """

    workers: int = 2
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0
    memory_per_worker: int | None = None
    resources_per_worker: Mapping[str, float] = dataclasses.field(default_factory=dict)
    placement_strategy: str = "PACK"

    def __post_init__(self) -> None:
        _number("Scaling", "workers", self.workers, minimum=1, integer=True)
        _number("Scaling", "cpus_per_worker", self.cpus_per_worker, minimum=0)
        _number("Scaling", "gpus_per_worker", self.gpus_per_worker, minimum=0)
        if self.memory_per_worker is not None:
            _number("Scaling", "memory_per_worker", self.memory_per_worker, minimum=1, integer=True)
        if not isinstance(self.resources_per_worker, Mapping):
            raise SpecError("Scaling.resources_per_worker must be a mapping of resource name to "
                            f"amount, got {self.resources_per_worker!r}",
                            field="Scaling.resources_per_worker", value=self.resources_per_worker)
        for key, amount in self.resources_per_worker.items():
            if key in ("CPU", "GPU", "memory"):
                raise SpecError(f"Scaling.resources_per_worker[{key!r}]: use the "
                                f"{'cpus' if key == 'CPU' else 'gpus' if key == 'GPU' else 'memory'}"
                                "_per_worker field instead",
                                field=f"Scaling.resources_per_worker.{key}", value=amount)
            _number("Scaling", f"resources_per_worker[{key!r}]", amount, minimum=0)
        if self.placement_strategy not in PLACEMENT_STRATEGIES:
            raise SpecError(f"Scaling.placement_strategy must be one of {list(PLACEMENT_STRATEGIES)}, "
                            f"got {self.placement_strategy!r}",
                            field="Scaling.placement_strategy", value=self.placement_strategy)

    def per_worker(self) -> dict[str, float]:
        """The Ray resources one worker asks for."""
        res = {"CPU": float(self.cpus_per_worker)}
        if self.gpus_per_worker:
            res["GPU"] = float(self.gpus_per_worker)
        if self.memory_per_worker:
            res["memory"] = float(self.memory_per_worker)
        res.update({k: float(v) for k, v in self.resources_per_worker.items()})
        return res


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
        _number("Checkpointing", "every", self.every, minimum=1, integer=True)
        if self.keep is not None:
            _number("Checkpointing", "keep", self.keep, minimum=1, integer=True)
        if self.mode not in ("max", "min"):
            raise SpecError(f"Checkpointing.mode must be 'max' or 'min', got {self.mode!r}",
                            field="Checkpointing.mode", value=self.mode)
        if self.score is not None and not (isinstance(self.score, str) and self.score):
            raise SpecError(f"Checkpointing.score must be a metric name, got {self.score!r}",
                            field="Checkpointing.score", value=self.score)


def check_loop(loop: Callable[..., Any]) -> None:
    """A loop must be callable and picklable, since Ray ships it to every worker."""
    if not callable(loop):
        raise SpecError(f"TrainJob.loop must be a callable taking the train context, got {loop!r}",
                        field="TrainJob.loop", value=loop)
    from ray import cloudpickle

    from raymlp._pickling import ship_by_value

    ship_by_value(loop)
    try:
        cloudpickle.dumps(loop)
    except Exception as exc:  # the pickler raises many kinds of errors
        name = getattr(loop, "__qualname__", repr(loop))
        raise SpecError(
            f"TrainJob.loop {name} cannot be pickled to send it to the workers: {exc}. "
            "Capture only picklable objects (no open files, sockets, generators or live clients); "
            "create those inside the loop.",
            field="TrainJob.loop", value=name,
        ) from exc
