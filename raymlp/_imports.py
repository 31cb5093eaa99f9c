"""Lazy imports of optional dependencies with an actionable message when missing."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from raymlp.errors import DependencyError

# module name -> the extra that installs it
_EXTRAS = {
    "torch": "torch",
    "tensorflow": "tensorflow",
    "xgboost": "xgboost",
    "shap": "explain",
}


def require(module: str, *, purpose: str = "", load: bool = True) -> ModuleType | None:
    """Import ``module`` or raise :class:`DependencyError` naming the extra that installs it.

    With ``load=False`` only check that it is installed (the driver need not pay its import when
    only the workers use it) and return None.
    """
    try:
        if not load:
            if importlib.util.find_spec(module) is None:
                raise ImportError(module)
            return None
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = _EXTRAS.get(top)
        how = f"pip install 'raymlp[{extra}]'" if extra else f"pip install {top}"
        why = f" for {purpose}" if purpose else ""
        raise DependencyError(f"{top} is needed{why} but is not installed: {how}") from exc
