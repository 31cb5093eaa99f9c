"""Configuration, resolved in one place: explicit argument, then ``RAYMLP_*`` variable, then default.

==========================  ==============================  =====================================
setting                     variable                        default
==========================  ==============================  =====================================
ray_address                 RAYMLP_RAY_ADDRESS, RAY_ADDRESS  None: start a local Ray instance
ray_token                   RAYMLP_RAY_TOKEN, RAY_AUTH_TOKEN None: the token of a token-
                                                            authenticated Ray head (Ray 2.60's
                                                            default); job submission also reads
                                                            Ray's token file (token_file())
tracking_uri                RAYMLP_TRACKING_URI             sqlite:///<cwd>/.raymlp/mlflow.db
artifact_root               RAYMLP_ARTIFACT_ROOT            <cwd>/.raymlp/artifacts
storage_root                RAYMLP_STORAGE_ROOT             <cwd>/.raymlp/storage (any fsspec URL)
experiment                  RAYMLP_EXPERIMENT               "raymlp"
home                        RAYMLP_HOME                     <cwd>/.raymlp (the defaults above live
                                                            here, and the managed local Ray head's
                                                            record)
log_level                   RAYMLP_LOG_LEVEL                "ERROR": the engines' (Ray, MLflow)
                                                            log lines and warnings below it stay
                                                            out of the console; "INFO" brings
                                                            them back
==========================  ==============================  =====================================

This is the only module that reads the environment. :func:`get` caches the resolved
:class:`Config`; :func:`configure` overrides fields; :func:`reset` drops both (tests use it).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from raymlp.errors import ConfigError

__all__ = ["LOG_LEVELS", "Config", "configure", "explicit_env", "get", "reset", "token_file"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """The resolved raymlp configuration.

    Attributes:
        ray_address: address of an existing Ray cluster, or None to start a local instance.
        ray_token: the authentication token of the Ray cluster (heads with token
            authentication), or None; never shown in the repr.
        tracking_uri: the MLflow tracking URI (a local SQLite store by default).
        artifact_root: where a local MLflow store keeps artifacts.
        storage_root: root of checkpoints and job outputs; a local path or any fsspec URL.
        experiment: the default MLflow experiment name.
        home: raymlp's local folder (default stores, the managed local Ray head's record).
        log_level: the lowest level of the engines' log lines that reaches the console
            (``"DEBUG"``, ``"INFO"``, ``"WARNING"``, ``"ERROR"`` or ``"CRITICAL"``).
    """

    ray_address: str | None
    tracking_uri: str
    artifact_root: str
    storage_root: str
    experiment: str
    home: str
    log_level: str = "ERROR"
    ray_token: str | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("tracking_uri", "artifact_root", "storage_root", "experiment", "home"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"Config.{name} must be a non-empty string, got {value!r}")
        if not isinstance(self.log_level, str) or self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(f"Config.log_level must be one of {list(LOG_LEVELS)} "
                              f"(RAYMLP_LOG_LEVEL), got log_level={self.log_level!r}")
        object.__setattr__(self, "log_level", self.log_level.upper())

    def env(self) -> dict[str, str]:
        """The ``RAYMLP_*`` variables that reproduce this configuration in another process."""
        out = {
            "RAYMLP_TRACKING_URI": self.tracking_uri,
            "RAYMLP_ARTIFACT_ROOT": self.artifact_root,
            "RAYMLP_STORAGE_ROOT": self.storage_root,
            "RAYMLP_EXPERIMENT": self.experiment,
            "RAYMLP_HOME": self.home,
            "RAYMLP_LOG_LEVEL": self.log_level,
        }
        if self.ray_address:
            out["RAYMLP_RAY_ADDRESS"] = self.ray_address
        return out


_overrides: dict[str, object] = {}
_cached: Config | None = None


def _resolve(environ: Mapping[str, str]) -> Config:
    home = Path(_overrides.get("home") or environ.get("RAYMLP_HOME")  # type: ignore[arg-type]
                or Path.cwd() / ".raymlp").resolve()

    def pick(name: str, *variables: str, default: str | None) -> str | None:
        if name in _overrides:
            return _overrides[name]  # type: ignore[return-value]
        for var in variables:
            if environ.get(var):
                return environ[var]
        return default

    return Config(
        ray_address=pick("ray_address", "RAYMLP_RAY_ADDRESS", "RAY_ADDRESS", default=None),
        tracking_uri=pick(
            "tracking_uri", "RAYMLP_TRACKING_URI", "MLFLOW_TRACKING_URI",
            default=f"sqlite:///{home / 'mlflow.db'}",
        ),
        artifact_root=pick("artifact_root", "RAYMLP_ARTIFACT_ROOT", default=str(home / "artifacts")),
        storage_root=pick("storage_root", "RAYMLP_STORAGE_ROOT", default=str(home / "storage")),
        experiment=pick("experiment", "RAYMLP_EXPERIMENT", default="raymlp"),
        home=str(home),
        log_level=pick("log_level", "RAYMLP_LOG_LEVEL", default="ERROR"),
        ray_token=pick("ray_token", "RAYMLP_RAY_TOKEN", "RAY_AUTH_TOKEN", default=None),
    )


def token_file() -> str | None:
    """The token in Ray's token file (``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``).

    Job submission sends it when no token is given (a header a head without token
    authentication ignores); ``init`` leaves the file to Ray, which reads it in token mode.
    """
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def explicit_env() -> dict[str, str]:
    """The ``RAYMLP_*`` settings given explicitly (by :func:`configure` or the environment)
    that a job on another machine should inherit: tracking, storage and experiment. The
    defaults are left out, since they point into this machine's raymlp home."""
    cfg = get()
    out = {}
    for name, var, also in (("tracking_uri", "RAYMLP_TRACKING_URI", "MLFLOW_TRACKING_URI"),
                            ("artifact_root", "RAYMLP_ARTIFACT_ROOT", None),
                            ("storage_root", "RAYMLP_STORAGE_ROOT", None),
                            ("experiment", "RAYMLP_EXPERIMENT", None)):
        if name in _overrides or os.environ.get(var) or (also and os.environ.get(also)):
            out[var] = getattr(cfg, name)
    return out


def get() -> Config:
    """The current configuration (resolved once, then cached)."""
    global _cached
    if _cached is None:
        _cached = _resolve(os.environ)
    return _cached


def configure(**fields: object) -> Config:
    """Override configuration fields for this process; returns the new configuration.

    Raises:
        ConfigError: on an unknown field name or an invalid value.
    """
    global _cached
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(f"unknown configuration field(s) {unknown}; allowed: {sorted(known)}")
    previous = dict(_overrides)
    _overrides.update({k: v for k, v in fields.items() if v is not None})
    try:
        _cached = _resolve(os.environ)
    except ConfigError:
        _overrides.clear()
        _overrides.update(previous)
        raise
    return _cached


def reset() -> None:
    """Forget overrides and the cached configuration (the environment is read again)."""
    global _cached
    _overrides.clear()
    _cached = None
