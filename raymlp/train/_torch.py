"""Ray Train's torch backend, with torch imported only in the workers.

Ray's ``TorchConfig`` lives in a module that imports torch at the top, and Ray Train's controller
unpickles the backend config: every job's controller paid ~1.8 s and ~250 MB for a torch it
never uses. This config does the same set-up (Ray's own worker-side functions, called in the
workers: environment variables, process group, CUDA device) from a module free of torch.
"""

from __future__ import annotations

import contextlib
import logging

import ray
from ray.train.backend import Backend, BackendConfig

from raymlp import _ray_compat

logger = logging.getLogger(__name__)

_SHUTDOWN_TIMEOUT_S = 30


class TorchBackendConfig(BackendConfig):
    """Process-group set-up for torch DDP: ``backend`` is ``"nccl"`` or ``"gloo"``."""

    def __init__(self, backend: str, timeout_s: int = 1800):
        self.backend = backend
        self.timeout_s = timeout_s

    @property
    def backend_cls(self):
        return _TorchBackend

    @property
    def train_func_context(self):
        return _device_context

    @property
    def framework(self):
        return _ray_compat.TrainingFramework.TORCH

    def to_dict(self) -> dict:
        return {"backend": self.backend, "init_method": "tcp", "timeout_s": self.timeout_s}


@contextlib.contextmanager
def _device_context():
    with _ray_compat.torch_config.context_manager():
        yield


def _setup_worker(backend: str, world_rank: int, world_size: int, init_method: str,
                  timeout_s: int) -> None:
    _ray_compat.torch_config.set_distributed_env_vars()
    _ray_compat.torch_config.setup_process_group(backend=backend, world_rank=world_rank,
                                                 world_size=world_size, init_method=init_method,
                                                 timeout_s=timeout_s)


def _shutdown_worker(destroy_process_group: bool) -> None:
    _ray_compat.torch_config.shutdown(destroy_process_group=destroy_process_group)


class _TorchBackend(Backend):
    share_cuda_visible_devices: bool = True

    def on_start(self, worker_group, backend_config: TorchBackendConfig) -> None:
        addr, port = worker_group.execute_single(0, _ray_compat.address_and_port)
        url = f"tcp://{_ray_compat.build_address(addr, port)}"
        ray.get([
            worker_group.execute_single_async(
                rank, _setup_worker, backend=backend_config.backend, world_rank=rank,
                world_size=len(worker_group), init_method=url, timeout_s=backend_config.timeout_s)
            for rank in range(len(worker_group))
        ])

    def on_shutdown(self, worker_group, backend_config: TorchBackendConfig) -> None:
        futures = worker_group.execute_async(_shutdown_worker,
                                             destroy_process_group=len(worker_group) > 1)
        try:
            ray.get(futures, timeout=_SHUTDOWN_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            logger.warning("torch process group shutdown timed out after %d s", _SHUTDOWN_TIMEOUT_S)
