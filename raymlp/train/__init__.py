"""raymlp.train: distributed training on Ray Train (PyTorch, TensorFlow, XGBoost, your own)."""

from raymlp.train._backend import Backend, WorkerInfo
from raymlp.train._context import TrainContext
from raymlp.train._job import TrainJob, TrainResult
from raymlp.train._spec import Checkpointing, Scaling

__all__ = [
    "Backend",
    "Checkpointing",
    "Scaling",
    "TrainContext",
    "TrainJob",
    "TrainResult",
    "WorkerInfo",
]
