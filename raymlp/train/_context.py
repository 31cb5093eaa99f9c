"""What a training loop sees in each worker: :class:`TrainContext`."""

from __future__ import annotations

import dataclasses
import json
import pickle
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from raymlp._util import upload_dir

_STATE_FILE = "state.pkl"
_META_FILE = "raymlp.json"
MODEL_DIR = "model"
PAYLOAD_KEY = "__raymlp__"


@dataclasses.dataclass
class _Payload:
    """Everything the driver sends to each worker next to the user's config."""

    loop: Any
    config: dict
    framework: str
    every: int
    model_dir: str  # where rank 0 writes the final model (local path or fsspec URL)
    flavor: str  # the job's default flavor for ctx.log_model
    backend: Any = None  # the generic framework's user Backend


class TrainContext:
    """The training loop's handle on its worker: config, rank, data shard, reports, checkpoints.

    A loop restores its model and optimizer in one call, reports each epoch with the objects to
    checkpoint, and saves the final model::

        def loop(ctx):
            model = ctx.prepare_model(make_model())          # DDP-wrapped, on ctx.device
            opt = torch.optim.Adam(model.parameters())
            ctx.restore(model=model, optimizer=opt)           # no-op on a fresh start
            for epoch in ctx.epochs(ctx.config["epochs"]):    # resumes after the checkpoint
                loss = ...
                ctx.report({"loss": loss}, checkpoint={"model": model, "optimizer": opt})
            ctx.log_model(model, input_example=x[:8])

    - :meth:`restore` returns the saved state (None on a fresh start). Given objects by keyword
      (``model=``, ``optimizer=``, any other name), it loads each one's entry of the saved
      state into it (``load_state_dict``, or Keras's ``set_weights``; a wrapped model is
      unwrapped first) and returns the rest of the state as a dict.
    - :meth:`report`'s ``checkpoint`` may hold such objects: each one is saved as its
      ``state_dict()`` (of the unwrapped model) or Keras weights; anything else picklable is
      saved as it is.
    - :meth:`unwrap` gives the model inside a DistributedDataParallel wrapper;
      :attr:`start_epoch` the first epoch still to run.
    """

    def __init__(self, payload: _Payload):
        import ray.train

        self._payload = payload
        self._train = ray.train
        self._tctx = ray.train.get_context()
        self._epoch = 0
        self._last_epoch: int | None = None
        self._restored = False
        self._state: Any = None

    # -- who am I ---------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        """The job's ``config`` (hyperparameters and anything else the loop needs)."""
        return self._payload.config

    @property
    def rank(self) -> int:
        """This worker's world rank (0 .. world_size - 1)."""
        return self._tctx.get_world_rank()

    @property
    def world_size(self) -> int:
        return self._tctx.get_world_size()

    @property
    def local_rank(self) -> int:
        return self._tctx.get_local_rank()

    @property
    def framework(self) -> str:
        return self._payload.framework

    @property
    def device(self):
        """The torch device this worker trains on (``cuda:N`` with GPUs, else ``cpu``)."""
        import ray.train.torch

        return ray.train.torch.get_device()

    # -- data ----------------------------------------------------------------------------------
    def shard(self, *arrays: Any):
        """This worker's contiguous share of each array (sizes differ by at most one row).

        Returns a single shard for one array, a tuple for several.
        """
        n = len(arrays[0])
        for a in arrays[1:]:
            if len(a) != n:
                raise ValueError(f"shard: arrays differ in length ({n} vs {len(a)})")
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        stop = start + base + (1 if self.rank < extra else 0)
        out = tuple(a[start:stop] for a in arrays)
        return out[0] if len(out) == 1 else out

    def dataset(self, name: str = "train"):
        """This worker's shard of a Ray Dataset passed as ``TrainJob(datasets={name: ...})``."""
        return self._train.get_dataset_shard(name)

    # -- models --------------------------------------------------------------------------------
    def prepare_model(self, model):
        """Move a torch model to this worker's device and wrap it for data parallelism."""
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    @staticmethod
    def unwrap(model: Any) -> Any:
        """The model inside a torch ``DistributedDataParallel`` / ``DataParallel`` wrapper
        (any other model as it is)."""
        torch = sys.modules.get("torch")  # a model that is a torch wrapper means torch is loaded
        if torch is not None and isinstance(
                model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            return model.module
        return model

    # -- epochs, reports, checkpoints ---------------------------------------------------------
    def restore(self, model: Any = None, optimizer: Any = None, **objects: Any) -> Any:
        """The state saved with the latest checkpoint, loaded into the objects given.

        After a worker failure the job restarts every worker; ``restore`` then finds the last
        checkpoint and :meth:`epochs` resumes after its epoch.

        Args:
            model: loaded from the saved state's ``"model"`` entry (unwrapped first).
            optimizer: loaded from its ``"optimizer"`` entry.
            **objects: any other object, loaded from the entry of its keyword's name.

        Returns:
            None on a fresh start. Otherwise, with no objects given, the saved state as it was
            reported; with objects, a dict of the entries not loaded into one.

        Raises:
            ValueError: an object was given but the saved state has no entry for it.
        """
        if not self._restored:
            self._restored = True
            ckpt = self._train.get_checkpoint()
            if ckpt is not None:
                with ckpt.as_directory() as d:
                    meta = json.loads((Path(d) / _META_FILE).read_text())
                    self._epoch = int(meta["epoch"]) + 1
                    state_file = Path(d) / _STATE_FILE
                    self._state = self._load_state(state_file) if state_file.exists() else None
        targets = {k: v for k, v in {"model": model, "optimizer": optimizer, **objects}.items()
                   if v is not None}
        if self._state is None or not targets:
            return self._state
        if not isinstance(self._state, Mapping):
            raise ValueError("ctx.restore(...): the checkpoint holds a "
                             f"{type(self._state).__name__}, not a dict of named entries; report "
                             "checkpoint={'model': model, 'optimizer': optimizer, ...}")
        for key, target in targets.items():
            if key not in self._state:
                raise ValueError(f"ctx.restore({key}=...): the checkpoint has no {key!r} entry "
                                 f"(it has {sorted(self._state)})")
            _load_into(self.unwrap(target), self._state[key])
        return {k: v for k, v in self._state.items() if k not in targets}

    @property
    def start_epoch(self) -> int:
        """The first epoch to run: 0, or the one after the restored checkpoint's."""
        self.restore()
        return self._epoch

    def epochs(self, total: int) -> Iterator[int]:
        """Iterate over the epochs still to run, ``start_epoch .. total - 1``."""
        self.restore()
        self._last_epoch = total - 1
        for epoch in range(self._epoch, total):
            self._epoch = epoch
            yield epoch
        self._epoch = total

    def report(self, metrics: Mapping[str, Any], *, checkpoint: Any = None) -> None:
        """Report this epoch's metrics; every worker must call it the same number of times.

        Args:
            metrics: numeric metrics; ``epoch`` is added. Rank 0's values are recorded.
            checkpoint: the state to resume from: a dict whose models and optimizers are
                saved as their state (see the class docstring), or any picklable object. It is
                saved every ``Checkpointing.every`` epochs and at the last epoch; only rank 0's
                is kept.
        """
        epoch = self._epoch
        metrics = {**metrics, "epoch": epoch}
        due = (epoch + 1) % self._payload.every == 0 or epoch == self._last_epoch
        if checkpoint is None or not due:
            self._train.report(metrics)
        elif self.rank != 0:
            # Every rank takes part in the report; rank 0's state is the one kept.
            self._train.report(metrics, checkpoint=None)
        else:
            with tempfile.TemporaryDirectory(prefix="raymlp-ckpt-") as d:
                self._save_state(self._snapshot(checkpoint), Path(d) / _STATE_FILE)
                (Path(d) / _META_FILE).write_text(json.dumps({"epoch": epoch}))
                self._train.report(metrics, checkpoint=self._train.Checkpoint.from_directory(d))
        if self._last_epoch is None:
            self._epoch += 1

    def log_model(self, model: Any, input_example: Any = None, *,
                  flavor: str | None = None) -> None:
        """Save the final model (with a signature inferred from ``input_example``).

        Call it on every worker once training ends; rank 0's model becomes the job's MLflow
        LoggedModel. A model wrapped for data parallelism is unwrapped; a torch model is saved
        as a CPU copy that loads on any device.

        Args:
            model: the trained model.
            input_example: a batch of inputs, saved with the model (and its signature).
            flavor: the model's flavor (default: the job's ``flavor``, else the framework's).
        """
        from raymlp import tracking

        name = tracking.flavor(flavor or self._payload.flavor, field="log_model.flavor").name
        if self.rank != 0 and name != "tensorflow":
            return
        with tempfile.TemporaryDirectory(prefix="raymlp-model-") as d:
            # TF's distributed save is collective: every rank saves, only rank 0's is kept.
            path = Path(d) / MODEL_DIR
            tracking.save_model(self.unwrap(model), path, flavor=name,
                                input_example=input_example)
            if self.rank == 0:
                upload_dir(path, self._payload.model_dir)

    # -- serialization ----------------------------------------------------------------------
    def _snapshot(self, checkpoint: Any) -> Any:
        """The checkpoint with its models and optimizers replaced by their state."""
        if not isinstance(checkpoint, Mapping):
            return checkpoint
        return {k: _state_of(self.unwrap(v)) for k, v in checkpoint.items()}

    # -- serialization ----------------------------------------------------------------------
    def _save_state(self, state: Any, path: Path) -> None:
        if self.framework == "torch":
            import torch

            torch.save(state, path)
        else:
            from ray import cloudpickle

            path.write_bytes(cloudpickle.dumps(state))

    def _load_state(self, path: Path) -> Any:
        if self.framework == "torch":
            import torch

            return torch.load(path, map_location="cpu", weights_only=False)
        return pickle.loads(path.read_bytes())


def _state_of(obj: Any) -> Any:
    """What a checkpoint keeps of ``obj``: a torch module's or optimizer's ``state_dict()``,
    a Keras model's weights, anything else as it is."""
    if callable(getattr(obj, "state_dict", None)) and hasattr(obj, "load_state_dict"):
        return obj.state_dict()
    if callable(getattr(obj, "get_weights", None)) and callable(getattr(obj, "set_weights", None)):
        return obj.get_weights()
    return obj


def _load_into(obj: Any, state: Any) -> None:
    if callable(getattr(obj, "load_state_dict", None)):
        obj.load_state_dict(state)
    elif callable(getattr(obj, "set_weights", None)):
        obj.set_weights(state)
    else:
        raise ValueError(f"ctx.restore: cannot load state into a {type(obj).__name__} (it has "
                         "neither load_state_dict nor set_weights); take it from the returned "
                         "state instead")


def worker_main(config: dict) -> None:
    """The function Ray Train runs in every worker: build the context, run the user's loop."""
    from raymlp import _console

    _console.quiet_ray()  # Ray Train logs each report in the worker
    payload: _Payload = config[PAYLOAD_KEY]
    ctx = TrainContext(payload)
    info = None
    if payload.backend is not None:
        from raymlp.train._backend import worker_info

        info = worker_info(ctx)
        payload.backend.setup(info)
    try:
        payload.loop(ctx)
    finally:
        if info is not None:
            payload.backend.teardown(info)
