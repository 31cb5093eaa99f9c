"""What a training loop sees in each worker: :class:`TrainContext`."""

from __future__ import annotations

import dataclasses
import json
import pickle
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

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
    flavor: str
    backend: Any = None  # the generic framework's user Backend


class TrainContext:
    """The training loop's handle on its worker: config, rank, data shard, reports, checkpoints.

    Example:
        >>> def loop(ctx):
        ...     state = ctx.restore()                 # None on a fresh start
        ...     for epoch in ctx.epochs(ctx.config["epochs"]):
        ...         loss = ...
        ...         ctx.report({"loss": loss}, checkpoint={"model": model.state_dict()})
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

    # -- epochs, reports, checkpoints ---------------------------------------------------------
    def restore(self) -> Any:
        """The state saved with the latest checkpoint, or None on a fresh start.

        After a worker failure the job restarts every worker; ``restore`` then returns the
        state of the last checkpoint and :meth:`epochs` resumes after its epoch.
        """
        if self._restored:
            return self._state
        self._restored = True
        ckpt = self._train.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            meta = json.loads((Path(d) / _META_FILE).read_text())
            self._epoch = int(meta["epoch"]) + 1
            state_file = Path(d) / _STATE_FILE
            self._state = self._load_state(state_file) if state_file.exists() else None
        return self._state

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
            checkpoint: the state to resume from (any picklable object, e.g. a dict of
                state_dicts). It is saved every ``Checkpointing.every`` epochs and at the last
                epoch; only rank 0's is kept.
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
                self._save_state(checkpoint, Path(d) / _STATE_FILE)
                (Path(d) / _META_FILE).write_text(json.dumps({"epoch": epoch}))
                self._train.report(metrics, checkpoint=self._train.Checkpoint.from_directory(d))
        if self._last_epoch is None:
            self._epoch += 1

    def log_model(self, model: Any, input_example: Any = None, *, flavor: str | None = None) -> None:
        """Save the final model (with a signature inferred from ``input_example``).

        Call it on every worker once training ends; rank 0's model is logged to the job's
        MLflow run. Torch models wrapped for data parallelism are unwrapped.
        """
        flavor = flavor or self._payload.flavor
        if self.rank != 0 and flavor != "tensorflow":
            return
        from mlflow.models import infer_signature

        from raymlp.tracking._store import flavor_module, pip_requirements

        if flavor in ("torch", "pytorch"):
            import copy

            # Unwrap DDP and save a CPU copy: the model loads on machines without this GPU.
            model = copy.deepcopy(getattr(model, "module", model)).to("cpu")
        signature = None
        if input_example is not None:
            signature = infer_signature(input_example, _predict(model, flavor, input_example))
        with tempfile.TemporaryDirectory(prefix="raymlp-model-") as d:
            # TF's distributed save is collective: every rank saves, only rank 0's is kept.
            path = Path(d) / MODEL_DIR
            flavor_module(flavor).save_model(model, str(path), signature=signature,
                                             input_example=input_example,
                                             pip_requirements=pip_requirements(flavor))
            if self.rank == 0:
                _upload_dir(path, self._payload.model_dir)

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


def _predict(model: Any, flavor: str, x: Any):
    if flavor in ("torch", "pytorch"):
        import torch

        with torch.no_grad():
            was = model.training
            model.eval()
            out = model(torch.as_tensor(x)).cpu().numpy()
            model.train(was)
            return out
    if flavor == "xgboost":
        # inplace_predict builds no DMatrix, whose construction is a collective op in a job.
        return model.inplace_predict(x) if hasattr(model, "inplace_predict") else model.predict(x)
    if flavor == "tensorflow":
        return model.predict(x, verbose=0)
    return model.predict(x)


def _upload_dir(src: Path, dest: str) -> None:
    """Copy a directory to a local path or an fsspec URL."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(dest)
    if fs.exists(root):
        fs.rm(root, recursive=True)
    fs.makedirs(root, exist_ok=True)
    for f in src.rglob("*"):
        if f.is_file():
            target = f"{root}/{f.relative_to(src).as_posix()}"
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(f), target)


def download_dir(src: str, dest: Path) -> Path:
    """Copy a directory from a local path or an fsspec URL to ``dest``; returns ``dest``."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(src)
    for f in fs.find(root):
        rel = f[len(root):].lstrip("/")
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(f, str(target))
    return dest


def worker_main(config: dict) -> None:
    """The function Ray Train runs in every worker: build the context, run the user's loop."""
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
