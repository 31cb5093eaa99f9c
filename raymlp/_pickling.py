"""Sending user code (training loops, serving transformers) to Ray workers and replicas."""

from __future__ import annotations

import inspect
import sys
import sysconfig
from typing import Any

from raymlp.errors import SpecError


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


def check_shippable(field: str, obj: Any) -> None:
    """``obj`` must pickle, since Ray sends it to every worker (user modules go by value).

    Raises:
        SpecError: naming ``field``, the cause and the fix.
    """
    from ray import cloudpickle

    ship_by_value(obj)
    try:
        cloudpickle.dumps(obj)
    except Exception as exc:  # the pickler raises many kinds of errors
        name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
        raise SpecError(
            f"{field} {name} cannot be pickled to send it to the workers: {exc}. "
            "Capture only picklable objects (no open files, sockets, generators or live clients); "
            "create those inside the loop.",
            field=field, value=name, allowed="a picklable object",
        ) from exc
