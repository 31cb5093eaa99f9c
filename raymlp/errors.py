"""The raymlp error hierarchy.

Every error raymlp raises on purpose derives from :class:`RaymlpError`::

    RaymlpError
    ├── SpecError (also ValueError)              a spec field or argument is invalid (field, value,
    │   │                                        allowed); raised before any Ray work
    │   └── ResourceError                        asks for resources the cluster can never provide
    ├── DependencyError (also ImportError)       an optional dependency is missing
    ├── ConfigError (also ValueError)            configuration (arguments / RAYMLP_* variables) is
    │   │                                        invalid or names a cluster that cannot be used
    │   └── JobConnectionError (also ConnectionError)  a Ray head's job API cannot be reached
    ├── TrackingError                            the MLflow layer failed (store unreachable, unknown
    │                                            run or model, ...)
    ├── JobError (also RuntimeError)             a job failed after it started (cause, run_id)
    │   ├── ExperimentError                      a tuning experiment ended with more failed
    │   │                                        trials than allowed (failures: each one's cause)
    │   └── PipelineError                        a pipeline run failed: the step and its exception
    │                                            (step, cause, run_id)
    ├── ServiceError                             a serving operation failed: unknown service, no
    │                                            canary to promote, a failed deploy
    ├── RequestError                             an inference request a service cannot take
    │                                            (status: the HTTP status it is answered with)
    ├── KubernetesError                          the Kubernetes API refused or failed a call (status)
    └── TimeoutError (also builtins.TimeoutError)  a wait ran out before the work finished
                                                 (what, timeout_s, last_status)

All of them pickle and unpickle with their message and fields intact, so they cross Ray
worker boundaries unchanged. No exception class lives anywhere else in raymlp.
"""

from __future__ import annotations

import builtins

__all__ = [
    "ConfigError",
    "DependencyError",
    "ExperimentError",
    "JobConnectionError",
    "JobError",
    "KubernetesError",
    "PipelineError",
    "RaymlpError",
    "RequestError",
    "ResourceError",
    "ServiceError",
    "SpecError",
    "TimeoutError",
    "TrackingError",
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
        allowed: what the field accepts, in words (``"an integer >= 1"``), when known.
    """

    def __init__(self, message: str, *, field: str | None = None, value: object = None,
                 allowed: str | None = None):
        super().__init__(message)
        self.field = field
        self.value = value
        self.allowed = allowed


class ResourceError(SpecError):
    """The job asks for resources that the cluster can never provide."""


class DependencyError(RaymlpError, ImportError):
    """An optional dependency is missing; the message says which extra installs it."""


class ConfigError(RaymlpError, ValueError):
    """A configuration value (argument or ``RAYMLP_*`` variable) is invalid."""


class TrackingError(RaymlpError):
    """The tracking layer (MLflow) failed: unreachable store, unknown run or model, ..."""


class JobConnectionError(ConfigError, ConnectionError):
    """A Ray head's job submission API cannot be reached (wrong address, head down)."""


class JobError(RaymlpError, RuntimeError):
    """A job failed after it started; ``cause`` holds the underlying error text and ``run_id``
    the job's MLflow run (marked FAILED), when it had one."""

    def __init__(self, message: str, *, cause: str | None = None, run_id: str | None = None):
        super().__init__(message)
        self.cause = cause
        self.run_id = run_id


class PipelineError(JobError):
    """A pipeline run failed: ``step`` names the failed step, ``cause`` its exception and
    ``run_id`` the pipeline run (which :func:`raymlp.pipelines.resume` continues)."""

    def __init__(self, message: str, *, step: str | None = None, cause: str | None = None,
                 run_id: str | None = None):
        super().__init__(message, cause=cause, run_id=run_id)
        self.step = step


class ExperimentError(JobError):
    """A tuning experiment failed: more trials failed than ``max_failed_trials`` allows.

    Attributes:
        failures: one ``{"trial_id", "params", "error", "run_id"}`` per failed trial.
    """

    def __init__(self, message: str, *, failures: list | None = None, run_id: str | None = None):
        super().__init__(message, cause=None, run_id=run_id)
        self.failures = list(failures or [])


class ServiceError(RaymlpError):
    """A serving operation failed: unknown service, no canary to promote, a failed deploy."""


class RequestError(RaymlpError):
    """An inference request a service cannot take: answered with ``status`` (400 unless the
    fault is the service's) and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class KubernetesError(RaymlpError):
    """The Kubernetes API refused or failed a call; ``status`` is its HTTP status, when any."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class TimeoutError(RaymlpError, builtins.TimeoutError):
    """A wait ran out before the work finished; the work itself goes on unless the caller
    stops it.

    Attributes:
        what: what was waited for (``"service 'digits' to be RUNNING"``).
        timeout_s: the wait's bound in seconds.
        last_status: the last status seen before the bound ran out, when any.
    """

    def __init__(self, message: str, *, what: str | None = None, timeout_s: float | None = None,
                 last_status: object = None):
        super().__init__(message)
        self.what = what
        self.timeout_s = timeout_s
        self.last_status = last_status
