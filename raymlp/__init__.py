"""raymlp: an enterprise machine-learning platform as one Python library on Ray.

>>> import raymlp
>>> raymlp.init()                      # connect to RAY_ADDRESS, or start a local Ray instance
>>> from raymlp import train, tracking
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from raymlp._config import configure
from raymlp._runtime import init, shutdown
from raymlp.errors import RaymlpError

__version__ = "0.1.0"

__all__ = [
    "RaymlpError",
    "__version__",
    "cluster",
    "configure",
    "init",
    "pipelines",
    "serve",
    "shutdown",
    "tracking",
    "train",
    "tune",
]

_SUBPACKAGES = {"train", "tune", "serve", "pipelines", "cluster", "tracking"}

if TYPE_CHECKING:  # pragma: no cover
    from raymlp import cluster, pipelines, serve, tracking, train, tune


def __getattr__(name: str):
    # Subpackages load on first use so `import raymlp` stays cheap (no MLflow, no torch).
    if name in _SUBPACKAGES:
        return importlib.import_module(f"raymlp.{name}")
    raise AttributeError(f"module 'raymlp' has no attribute {name!r}")
