"""Lazy imports of optional dependencies with an actionable message when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from raymlp.errors import DependencyError

# module name -> the extra that installs it
_EXTRAS = {
    "torch": "torch",
    "tensorflow": "tensorflow",
    "xgboost": "xgboost",
}


def require(module: str, *, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`DependencyError` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = _EXTRAS.get(top)
        how = f"pip install 'raymlp[{extra}]'" if extra else f"pip install {top}"
        why = f" for {purpose}" if purpose else ""
        raise DependencyError(f"{top} is needed{why} but is not installed: {how}") from exc
