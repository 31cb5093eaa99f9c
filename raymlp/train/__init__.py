"""raymlp.train: distributed training on Ray Train (PyTorch, TensorFlow, XGBoost, your own).

A :class:`TrainJob` (spec) is run with :meth:`TrainJob.run` (action), which returns a
:class:`TrainResult` (metrics, checkpoints, MLflow run, model URI). The loop sees a
:class:`TrainContext` in every worker.
"""

from raymlp.train._backend import Backend, WorkerInfo
from raymlp.train._context import TrainContext
from raymlp.train._result import TrainResult
from raymlp.train._spec import Checkpointing, Scaling, TrainJob

__all__ = [
    "Backend",
    "Checkpointing",
    "Scaling",
    "TrainContext",
    "TrainJob",
    "TrainResult",
    "WorkerInfo",
]
