"""MLflow model directories: saving one (in a training worker), fetching and reading one."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raymlp.errors import TrackingError
from raymlp.tracking._flavors import flavor as _flavor

__all__ = ["METADATA_FLAVOR", "METADATA_FORMAT", "download_model", "model_metadata", "save_model"]

#: Keys raymlp writes into an MLmodel's ``metadata``.
METADATA_FLAVOR = "raymlp.flavor"
METADATA_FORMAT = "raymlp.serialization_format"

# Torch models are pickled, not exported: MLflow 3's default ``pt2`` (torch.export) program can
# neither move to another device nor switch to eval mode, so it would be served on the CPU
# whatever the replica holds.
TORCH_FORMAT = "pickle"


def save_model(model: Any, path: str | os.PathLike, *, flavor: str, input_example: Any = None,
               signature: Any = None) -> str:
    """Save ``model`` as an MLflow model directory at local ``path`` (used in training workers).

    The signature is inferred from ``input_example`` when not given. A torch model is unwrapped
    from DistributedDataParallel and saved as a CPU copy in the pickled format, which loads on
    any device, moves with ``.to()`` and switches to ``eval()``; the MLmodel's ``metadata``
    records the format (``raymlp.serialization_format``) and raymlp's flavor name.

    Args:
        model: the trained model (a pyfunc ``PythonModel`` for ``flavor="pyfunc"``).
        path: a directory that does not exist yet, or is empty.
        flavor: the model's flavor (``"torch"``, ``"tensorflow"``, ``"xgboost"``, ``"sklearn"``,
            ``"pyfunc"`` or an alias).
        input_example: a batch of inputs, saved with the model.
        signature: an ``mlflow.models.ModelSignature``; inferred from ``input_example`` when None.

    Returns:
        str: raymlp's name of the flavor the model was saved with.

    Raises:
        SpecError: an unknown flavor.

    Example:
        >>> save_model(net, "/tmp/model", flavor="torch", input_example=x[:8])
        'torch'
    """
    from mlflow.models import infer_signature

    from raymlp import _console

    _console.quiet()  # a training worker may not have run it yet
    fl = _flavor(flavor)
    kwargs: dict[str, Any] = {}
    metadata = {METADATA_FLAVOR: fl.name}
    if fl.name == "torch":
        model = copy.deepcopy(getattr(model, "module", model)).to("cpu")
        kwargs["serialization_format"] = TORCH_FORMAT
        metadata[METADATA_FORMAT] = TORCH_FORMAT
    if signature is None and input_example is not None and fl.name != "pyfunc":
        signature = infer_signature(input_example, _predict(model, fl.name, input_example))
    args, model_kw = ((), {"python_model": model}) if fl.name == "pyfunc" else ((model,), {})
    with _quiet_pickle_warning():
        fl.module().save_model(*args, path=str(path), signature=signature,
                               input_example=input_example, pip_requirements=fl.requirements(),
                               metadata=metadata, **model_kw, **kwargs)
    return fl.name


@contextlib.contextmanager
def _quiet_pickle_warning() -> Iterator[None]:
    """Drop MLflow's advice to use ``pt2`` (raymlp chose the pickled format on purpose) unless
    the engines' INFO output was asked for."""
    from raymlp import _console

    if _console.verbose():
        yield
        return
    log = logging.getLogger("mlflow.pytorch")
    drop = _DropMessage("Saving pytorch model by Pickle")
    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _predict(model: Any, flavor: str, x: Any):
    """The model's output on ``x`` (to infer a signature), without changing its mode."""
    if flavor == "torch":
        import torch

        with torch.no_grad():
            was = model.training
            model.eval()
            try:
                return model(torch.as_tensor(x)).cpu().numpy()
            finally:
                model.train(was)
    if flavor == "xgboost":
        # inplace_predict builds no DMatrix, whose construction is a collective op in a job.
        return model.inplace_predict(x) if hasattr(model, "inplace_predict") else model.predict(x)
    if flavor == "tensorflow":
        return model.predict(x, verbose=0)
    return model.predict(x)


def download_model(uri: str | os.PathLike, dst: str | os.PathLike | None = None) -> Path:
    """A local copy of the model directory at ``uri``, fetched from the configured store.

    Args:
        uri: ``models:/<model_id>``, ``models:/name@alias``, ``models:/name/3``,
            ``runs:/<run_id>/model``, any artifact URI, or a local directory.
        dst: where to put it (default: a new temporary directory; a local directory given as
            ``uri`` is returned as it is).

    Returns:
        pathlib.Path: the local model directory (it holds the ``MLmodel`` file).

    Raises:
        TrackingError: the model cannot be fetched.
    """
    from mlflow.artifacts import download_artifacts

    from raymlp.tracking._store import client

    text = str(uri)
    local = Path(text.removeprefix("file://"))
    if "://" not in text and ":/" not in text or text.startswith("file://"):
        if not (local / "MLmodel").is_file():
            raise TrackingError(f"no MLflow model at {text!r} (no MLmodel file there)")
        if dst is None:
            return local
        shutil.copytree(local, dst, dirs_exist_ok=True)
        return Path(dst)
    client()
    if dst is not None:
        Path(dst).mkdir(parents=True, exist_ok=True)
    try:
        out = download_artifacts(artifact_uri=text, dst_path=None if dst is None else str(dst))
    except Exception as exc:
        raise TrackingError(f"cannot fetch model {text!r}: {exc}") from exc
    return Path(out)


def model_metadata(path_or_uri: str | os.PathLike):
    """The ``mlflow.models.Model`` (flavors, signature, metadata) of a saved or logged model.

    Only the MLmodel file is read; the model itself is not fetched.

    Raises:
        TrackingError: there is no model there.
    """
    from mlflow.models import Model

    from raymlp.tracking._store import client

    client()
    try:
        return Model.load(str(path_or_uri))
    except Exception as exc:
        raise TrackingError(f"no MLflow model at {str(path_or_uri)!r}: {exc}") from exc
