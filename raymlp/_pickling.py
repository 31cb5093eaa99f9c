"""Sending user code (training loops, serving transformers) to Ray workers and replicas."""

from __future__ import annotations

import inspect
import sys
import sysconfig
from typing import Any


def ship_by_value(obj: Any) -> None:
    """Pickle the module ``obj`` is defined in by value when it is the user's own code, so
    workers and replicas need not import it; modules of installed packages stay by reference
    (every worker has them too)."""
    from ray import cloudpickle

    module = inspect.getmodule(obj)  # functions, classes and instances (via __module__)
    if module is None or module.__name__ in ("__main__", "builtins"):
        return
    path = getattr(module, "__file__", None) or ""
    installed = (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], sys.prefix)
    if not path or path.startswith(installed) or module.__name__.split(".")[0] == "raymlp":
        return
    cloudpickle.register_pickle_by_value(module)
