"""A model as a replica serves it: resolved URI, loaded flavor, signature as OIP metadata."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from raymlp._spec import fail, string
from raymlp.errors import TrackingError
from raymlp.serve._protocol import RequestError, TensorMetadata, datatype_of

logger = logging.getLogger("raymlp.serve")


_MODEL_URI = ("'models:/NAME@ALIAS', 'models:/NAME/VERSION', 'models:/LOGGED_MODEL_ID', "
              "'runs:/RUN_ID/PATH', an artifact URL or a local model directory")


def check_model_uri(field: str, uri: Any) -> str:
    """Check the syntax of a model URI (whether a local directory exists is checked at deploy)."""
    string(field, uri, allowed=_MODEL_URI)
    if uri.startswith("models:/") and not re.fullmatch(r"[^/@]+(@[^/@]+|/[0-9]+)?",
                                                       uri[len("models:/"):]):
        raise fail(field, uri, _MODEL_URI)
    return uri


def resolve_uri(uri: str) -> tuple[str, str | None]:
    """Pin an alias to its version: ``models:/m@champion`` -> (``models:/m/3``, ``"3"``)."""
    from raymlp import tracking

    if uri.startswith("models:/"):
        rest = uri[len("models:/"):]
        if "@" in rest:
            name, alias = rest.split("@", 1)
            mv = tracking.get_version(name, alias=alias)
            return f"models:/{name}/{mv.version}", str(mv.version)
        if "/" not in rest:  # an MLflow 3 logged model: models:/m-<id>
            return uri, None
        name, version = rest.rsplit("/", 1)
        tracking.get_version(name, version=version)  # fails early on an unknown version
        return uri, version
    return uri, None


@dataclasses.dataclass
class LoadedModel:
    """A loaded model and how to call it.

    Attributes:
        flavor: raymlp's flavor name it was loaded with (``"torch"``, ``"sklearn"``, ...).
        platform: the v2 metadata's platform (``"mlflow-pytorch"``: MLflow's flavor name).
        device: where the model computes (``"cpu"``, ``"cuda"``).
        format: how it was saved, for torch models: ``"pickle"`` or ``"pt2"`` (torch.export).
        fallback: why it computes on the CPU although the replica holds a GPU, when it does.
    """

    uri: str
    flavor: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    columnar: bool
    _predict: Callable[[Any], Any]
    platform: str = "mlflow-pyfunc"
    example: Any = None  # the input example logged with the model (explainers' background)
    device: str = "cpu"
    format: str | None = None
    fallback: str | None = None

    @property
    def single_input(self) -> bool:
        return self.columnar or len(self.inputs) <= 1

    def assemble(self, tensors: dict[str, np.ndarray]) -> Any:
        """The model's input from named request tensors (already checked against metadata)."""
        if self.columnar:
            if self.flavor == "pyfunc":
                import pandas as pd

                return pd.DataFrame({spec.name: tensors[spec.name] for spec in self.inputs})
            return np.column_stack([tensors[spec.name] for spec in self.inputs])
        if len(self.inputs) <= 1:
            return next(iter(tensors.values()))
        return {spec.name: tensors[spec.name] for spec in self.inputs}

    def predict(self, x: Any) -> dict[str, np.ndarray]:
        """Call the model; returns named output arrays."""
        return named_outputs(self._predict(x),
                             self.outputs[0].name if len(self.outputs) == 1 else "predict")


def named_outputs(out: Any, name: str) -> dict[str, np.ndarray]:
    """Model or transformer outputs as named numpy arrays (one unnamed output gets ``name``)."""
    if hasattr(out, "to_dict") and hasattr(out, "columns"):  # DataFrame
        return {str(c): out[c].to_numpy() for c in out.columns}
    if isinstance(out, dict):
        return {str(k): _array(v) for k, v in out.items()}
    return {name: _array(out)}


def _array(value: Any) -> np.ndarray:
    if type(value).__module__.startswith("torch"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def load(uri: str, flavor: str = "auto", *, threads: int | None = None,
         gpu: bool = False) -> LoadedModel:
    """Fetch and load the model at ``uri`` (a resolved URI or local directory); with ``gpu``
    (the replica was given one) torch and xgboost models compute on it.

    Raises:
        TrackingError: the model cannot be fetched or loaded.
        SpecError: ``flavor`` names a flavor the model was not saved with.
    """
    from mlflow.models import Model

    from raymlp import tracking

    local = tracking.download_model(uri)
    try:
        meta = Model.load(str(local))
    except Exception as exc:
        raise TrackingError(f"no MLflow model at {uri!r}: {exc}") from exc
    if flavor == "auto":
        fl = tracking.flavor(tracking.native_flavor(meta.flavors))
    else:
        fl = tracking.flavor(flavor, field="InferenceService.flavor")
        if fl.name != "pyfunc" and fl.mlflow_name not in meta.flavors:
            raise fail("InferenceService.flavor", flavor,
                       f"a flavor model {uri!r} was saved with: it has {sorted(meta.flavors)}")
    loaded = LoadedModel(uri=uri, flavor=fl.name, inputs=[], outputs=[], columnar=False,
                         _predict=lambda x: x, platform="mlflow-pyfunc" if fl.name == "pyfunc"
                         else f"mlflow-{fl.mlflow_name}")
    try:
        if fl.name == "torch":
            loaded._predict = _torch(loaded, local, meta.flavors[fl.mlflow_name], threads, gpu)
        else:
            model = fl.module().load_model(str(local))
            loaded._predict = _predictor(loaded, model, fl.name, gpu)
    except Exception as exc:
        raise TrackingError(f"cannot load {uri!r} with {fl.module_name}: {exc}") from exc
    loaded.inputs, loaded.outputs, loaded.columnar = _metadata(meta.signature)
    try:
        loaded.example = meta.load_input_example(str(local))
    except Exception:  # an unreadable example only costs the explainer its background
        loaded.example = None
    return loaded


def _fall_back(loaded: LoadedModel, reason: str) -> None:
    """Compute on the CPU although the replica holds a GPU: said in the log and in stats."""
    loaded.device, loaded.fallback = "cpu", reason
    logger.warning("model %s is served on the CPU although the replica holds a GPU: %s",
                   loaded.uri, reason)


def _torch(loaded: LoadedModel, local: Path, conf: dict, threads: int | None,
           gpu: bool) -> Callable[[Any], Any]:
    """A torch model on the replica's device, from either format MLflow saves.

    ``pt2`` (MLflow 3's default with an input example) is a torch.export program: its module
    refuses ``eval()`` (the mode was fixed when it was exported) and its graph may hold
    device constants that ``.to()`` would not move, so the program itself is moved with
    ``torch.export.passes.move_to_device_pass`` before its module is built. A pickled module is
    put in eval mode and moved with ``.to()``.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cpu")
    if gpu:
        if torch.cuda.is_available():
            device = torch.device("cuda")
        else:
            _fall_back(loaded, "torch.cuda.is_available() is False in the replica "
                               f"(torch {torch.__version__})")
    program = local / conf.get("model_data", "data") / "model.pt2"
    if program.is_file():
        loaded.format = "pt2"
        # The registry the replica serves from is trusted: MLflow's own loader makes this call.
        exported = torch.export.load(str(program))
        if device.type != "cpu":
            try:
                exported = torch.export.passes.move_to_device_pass(exported, device)
            except Exception as exc:  # an op torch cannot move: serve, but say so
                _fall_back(loaded, f"moving the torch.export program to {device} failed: "
                                   f"{type(exc).__name__}: {exc}")
                device = torch.device("cpu")
        model = exported.module()
    else:
        import mlflow.pytorch

        loaded.format = "pickle"
        model = mlflow.pytorch.load_model(str(local), map_location="cpu")
        model.eval()
        model.to(device)
    loaded.device = str(device)

    def predict(x):
        with torch.inference_mode():
            return model(torch.as_tensor(x, device=device))

    return predict


def _predictor(loaded: LoadedModel, model: Any, flavor: str, gpu: bool) -> Callable[[Any], Any]:
    if flavor == "xgboost":
        booster = model.get_booster() if hasattr(model, "get_booster") else model
        if gpu:
            booster.set_param({"device": "cuda"})
            loaded.device = "cuda"
        return model.predict if hasattr(model, "get_params") else model.inplace_predict
    return model.predict


def _metadata(signature) -> tuple[list[TensorMetadata], list[TensorMetadata], bool]:
    if signature is None:
        return [], [], False

    def specs(schema, prefix: str) -> tuple[list[TensorMetadata], bool]:
        if schema is None:
            return [], False
        out = []
        tensor = schema.is_tensor_spec()
        for i, spec in enumerate(schema.inputs):
            name = spec.name or f"{prefix}-{i}"
            if tensor:
                out.append(TensorMetadata(name=name, datatype=datatype_of(spec.type),
                                          shape=[int(d) for d in spec.shape]))
            else:
                try:
                    dtype = spec.type.to_numpy()
                except Exception:
                    dtype = np.dtype(object)
                out.append(TensorMetadata(name=name, datatype=datatype_of(dtype), shape=[-1]))
        return out, not tensor

    inputs, columnar = specs(signature.inputs, "input")
    outputs, _ = specs(signature.outputs, "output")
    return inputs, outputs, columnar


def check_inputs(specs: list[TensorMetadata], names: list[str], owner: str = "the model") -> None:
    """Missing or unexpected input names -> 400 naming them."""
    if not specs:
        if len(names) != 1:
            raise RequestError(f"{owner} takes one input tensor, got {len(names)}")
        return
    wanted = [spec.name for spec in specs]
    missing = [n for n in wanted if n not in names]
    if missing:
        raise RequestError(f"missing input(s) {missing}; {owner} takes {wanted}")
    extra = [n for n in names if n not in wanted]
    if extra:
        raise RequestError(f"unknown input(s) {extra}; {owner} takes {wanted}")
