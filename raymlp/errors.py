"""The raymlp error hierarchy.

Every error raymlp raises on purpose derives from :class:`RaymlpError`::

    RaymlpError
    ├── SpecError (also ValueError)            a spec or argument is invalid; raised before any Ray work
    ├── ResourceError (also SpecError)         asks for resources the cluster can never provide
    ├── DependencyError (also ImportError)     an optional dependency is missing
    ├── ConfigError (also ValueError)          configuration (arguments / RAYMLP_* variables) is invalid
    ├── TrackingError                          the MLflow layer failed (store unreachable, unknown model, ...)
    └── JobError (also RuntimeError)           a training job failed after it started

All of them pickle and unpickle with their message and fields intact, so they cross Ray
worker boundaries unchanged.
"""

from __future__ import annotations

__all__ = [
    "RaymlpError",
    "SpecError",
    "ResourceError",
    "DependencyError",
    "ConfigError",
    "TrackingError",
    "JobError",
]


class RaymlpError(Exception):
    """Base of every error raymlp raises on purpose."""

    def __reduce__(self):  # keep extra keyword fields across pickling
        return (_rebuild, (type(self), self.args, self.__dict__.copy()))


def _rebuild(cls, args, state):
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class SpecError(RaymlpError, ValueError):
    """A spec field or argument is invalid.

    Attributes:
        field: the dotted name of the offending field (``"Scaling.workers"``), when known.
        value: the offending value.
    """

    def __init__(self, message: str, *, field: str | None = None, value: object = None):
        super().__init__(message)
        self.field = field
        self.value = value


class ResourceError(SpecError):
    """The job asks for resources that the cluster can never provide."""


class DependencyError(RaymlpError, ImportError):
    """An optional dependency is missing; the message says which extra installs it."""


class ConfigError(RaymlpError, ValueError):
    """A configuration value (argument or ``RAYMLP_*`` variable) is invalid."""


class TrackingError(RaymlpError):
    """The tracking layer (MLflow) failed: unreachable store, unknown run or model, ..."""


class JobError(RaymlpError, RuntimeError):
    """A job failed after it started; ``cause`` holds the underlying error text and ``run_id``
    the job's MLflow run (marked FAILED), when it had one."""

    def __init__(self, message: str, *, cause: str | None = None, run_id: str | None = None):
        super().__init__(message)
        self.cause = cause
        self.run_id = run_id
