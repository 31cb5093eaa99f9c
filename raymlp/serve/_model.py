"""A model as a replica serves it: resolved URI, loaded flavor, signature as OIP metadata."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from raymlp.errors import SpecError, TrackingError
from raymlp.serve._protocol import RequestError, TensorMetadata, datatype_of

_NATIVE = ("sklearn", "pytorch", "xgboost")  # MLflow flavor names loaded natively under "auto"
_FLAVOR_MODULE = {"sklearn": "sklearn", "torch": "pytorch", "pytorch": "pytorch",
                  "xgboost": "xgboost", "pyfunc": "pyfunc"}


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
    """A loaded model and how to call it."""

    uri: str
    flavor: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    columnar: bool
    _predict: Callable[[Any], Any]
    example: Any = None  # the input example logged with the model (explainers' background)
    device: str = "cpu"  # where the model computes

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
    """Download and load the model at ``uri`` (a resolved URI or local directory); with
    ``gpu`` (the replica was given one) torch and xgboost models compute on it."""
    import importlib

    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    from raymlp.tracking import _store

    _store.client()  # point the fluent API at the configured store
    try:
        local = download_artifacts(artifact_uri=uri) if "://" in uri or ":/" in uri else uri
        meta = Model.load(local)
    except Exception as exc:
        raise TrackingError(f"cannot fetch model {uri!r}: {exc}") from exc
    flavors = meta.flavors
    if flavor == "auto":
        native = [f for f in _NATIVE if f in flavors]
        mlflow_flavor = native[0] if native else "pyfunc"
    else:
        mlflow_flavor = _FLAVOR_MODULE[flavor]
        if mlflow_flavor != "pyfunc" and mlflow_flavor not in flavors:
            raise SpecError(f"flavor={flavor!r}: model {uri!r} has no such flavor; it has "
                            f"{sorted(flavors)}", field="InferenceService.flavor", value=flavor)
    module = importlib.import_module(f"mlflow.{mlflow_flavor}")
    try:
        model = module.load_model(local)
    except Exception as exc:
        raise TrackingError(f"cannot load {uri!r} with mlflow.{mlflow_flavor}: {exc}") from exc

    predict: Callable[[Any], Any]
    where = "cpu"
    if mlflow_flavor == "pytorch":
        import torch

        if threads:
            torch.set_num_threads(threads)
        device = torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")
        try:
            model.eval()
            model.to(device)
        except (NotImplementedError, AttributeError):  # an exported (pt2) program
            device = torch.device("cpu")
        where = str(device)

        def predict(x):
            with torch.inference_mode():
                return model(torch.as_tensor(x, device=device))
    elif mlflow_flavor == "xgboost":
        booster = model.get_booster() if hasattr(model, "get_booster") else model
        if gpu:
            booster.set_param({"device": "cuda"})
            where = "cuda"
        predict = model.predict if hasattr(model, "get_params") else model.inplace_predict
    else:
        predict = model.predict
    inputs, outputs, columnar = _metadata(meta.signature)
    try:
        example = meta.load_input_example(local)
    except Exception:  # an unreadable example only costs the explainer its background
        example = None
    return LoadedModel(uri=uri, flavor="pyfunc" if mlflow_flavor == "pyfunc" else mlflow_flavor,
                       inputs=inputs, outputs=outputs, columnar=columnar, _predict=predict,
                       example=example, device=where)


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
