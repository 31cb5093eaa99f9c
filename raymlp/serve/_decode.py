"""Request tensors from a body: Open Inference Protocol v2 tensors (JSON or binary) and KServe
v1 ``instances``, checked against what the service takes (the model's signature, or the
transformer's declared tensors)."""

from __future__ import annotations

import numpy as np

from raymlp.serve import _protocol as oip
from raymlp.serve._model import LoadedModel, check_inputs
from raymlp.serve._transformer import Loaded as Transformer


class Interface:
    """What requests must carry: the model's inputs, or the transformer's when it declares them
    (``specs`` None: the transformer takes any tensors)."""

    __slots__ = ("by_name", "columnar", "owner", "specs")

    def __init__(self, model: LoadedModel, transformer: Transformer | None):
        if transformer is None:
            self.specs, self.columnar, self.owner = model.inputs, model.columnar, "the model"
        else:
            self.specs = transformer.inputs
            self.columnar = bool(self.specs) and len(self.specs) > 1
            self.owner = "the service"
        self.by_name = {s.name: s for s in self.specs or []}

    def v2(self, inputs: list[oip.RequestInput], binary: bytes) -> dict[str, np.ndarray]:
        """Named arrays from v2 request tensors (JSON or binary), checked against the
        interface."""
        parts = oip.binary_parts(inputs, binary)
        if self.specs is not None:
            check_inputs(self.specs, [i.name for i in inputs], self.owner)
        return {i.name: oip.decode(i, self.by_name.get(i.name), part)
                for i, part in zip(inputs, parts)}

    def v1(self, raw: bytes) -> dict[str, np.ndarray]:
        """Named arrays from a KServe v1 body (``instances``, or ``inputs``)."""
        req = oip.parse(oip.V1Request, raw)
        instances = req.instances if req.instances is not None else req.inputs
        if not isinstance(instances, list) or not instances:
            raise oip.RequestError("body must hold a non-empty 'instances' list")
        specs = self.specs or []
        if self.columnar:
            return _v1_columns(specs, instances, self.owner)
        if len(specs) > 1:
            raise oip.RequestError(f"{self.owner} takes several named inputs: use the v2 infer "
                                   "API")
        spec = specs[0] if specs else None
        try:
            arr = np.asarray(instances)
        except ValueError as exc:
            raise oip.RequestError(f"instances are ragged: {exc}") from None
        if arr.dtype == object:
            raise oip.RequestError("instances must be a rectangular list of numbers or strings")
        datatype = spec.datatype if spec else oip.datatype_of(arr.dtype)
        name = spec.name if spec else "input-0"
        return {name: oip.decode(oip.RequestInput(name=name, shape=list(arr.shape),
                                                  datatype=datatype,
                                                  data=arr.reshape(-1).tolist()), spec)}


def _v1_columns(specs: list[oip.TensorMetadata], instances: list,
                owner: str) -> dict[str, np.ndarray]:
    """Columns from v1 rows: objects by column name, or lists in column order."""
    cols = [s.name for s in specs]
    if all(isinstance(r, dict) for r in instances):
        missing = sorted({c for r in instances for c in cols if c not in r})
        if missing:
            raise oip.RequestError(f"instances miss column(s) {missing}; {owner} takes {cols}")
        rows = [[r[c] for c in cols] for r in instances]
    else:
        rows = instances
    if not all(isinstance(row, list) and len(row) == len(cols) for row in rows):
        raise oip.RequestError(f"each instance must hold {len(cols)} values ({cols})")
    return {spec.name: oip.decode(oip.RequestInput(
                name=spec.name, shape=[len(rows)], datatype=spec.datatype,
                data=[row[j] for row in rows]), spec)
            for j, spec in enumerate(specs)}
