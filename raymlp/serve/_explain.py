"""The ``:explain`` endpoint's SHAP attributions, one explainer per served model version."""

from __future__ import annotations

from typing import Any

import numpy as np

from raymlp.serve import _protocol as oip
from raymlp.serve._model import LoadedModel


class Explainers:
    """SHAP explainers built on first use per model (their background: the model's logged
    input example) and dropped when the service state changes."""

    def __init__(self) -> None:
        self._by_model: dict[int, Any] = {}

    def explain(self, model: LoadedModel, x: np.ndarray) -> dict:
        """Per-feature attributions of ``model``'s predictions on the 2-d batch ``x``."""
        import shap

        explainer = self._by_model.get(id(model))
        if explainer is None:
            background = model.example
            if background is None:
                raise oip.RequestError("the model was logged without an input example, which "
                                       "the explainer needs as background data", 400)
            background = np.asarray(background, dtype=x.dtype).reshape(-1, x.shape[1])

            def f(batch):
                return next(iter(model.predict(batch.astype(x.dtype)).values()))

            explainer = shap.Explainer(f, background)
            self._by_model[id(model)] = explainer
        try:
            result = explainer(x)
        except oip.REJECTED as exc:
            raise oip.RequestError(f"the model rejected the input: {exc}", 400) from None
        return {"explanations": {"method": f"shap.{type(explainer).__name__}",
                                 "values": np.asarray(result.values).tolist(),
                                 "base_values": np.asarray(result.base_values).tolist()}}
