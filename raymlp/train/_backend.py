"""The generic backend hook: plug any framework's environment and rendezvous into a job."""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

from ray.train.backend import Backend as _RayBackend
from ray.train.backend import BackendConfig as _RayBackendConfig

from raymlp import _ray_compat


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """Where a worker stands in the job, for a backend's set-up.

    Attributes:
        rank: world rank (0 .. world_size - 1).
        world_size: number of workers.
        local_rank: rank among the workers on the same node.
        master_addr: IP address of rank 0's node, for rendezvous.
        master_port: a free port on rank 0's node, reserved for rendezvous.
    """

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


class Backend(abc.ABC):
    """Set up a framework's distributed environment in each worker before the loop runs.

    Subclass it and pass an instance as ``TrainJob(framework="generic", backend=...)``.

    Example:
        >>> class MyFramework(Backend):
        ...     def setup(self, worker):
        ...         os.environ["MYFW_COORDINATOR"] = f"{worker.master_addr}:{worker.master_port}"
        ...         myfw.init(rank=worker.rank, size=worker.world_size)
    """

    name: str = "generic"

    @abc.abstractmethod
    def setup(self, worker: WorkerInfo) -> None:
        """Runs in every worker, before the training loop."""

    def teardown(self, worker: WorkerInfo) -> None:
        """Runs in every worker after the loop (also when it failed)."""


_rendezvous: tuple[str, int] | None = None


def _set_rendezvous(addr: str, port: int) -> None:
    global _rendezvous
    _rendezvous = (addr, int(port))


def worker_info(ctx: Any) -> WorkerInfo:
    if _rendezvous is None:  # pragma: no cover - on_start always runs first
        raise RuntimeError("the generic backend's rendezvous was not set up")
    return WorkerInfo(rank=ctx.rank, world_size=ctx.world_size, local_rank=ctx.local_rank,
                      master_addr=_rendezvous[0], master_port=_rendezvous[1])


class _GenericRayBackend(_RayBackend):
    def on_start(self, worker_group, backend_config) -> None:
        addr, port = worker_group.execute_single(0, _ray_compat.address_and_port)
        worker_group.execute(_set_rendezvous, addr, port)


class GenericBackendConfig(_RayBackendConfig):
    @property
    def backend_cls(self):
        return _GenericRayBackend
