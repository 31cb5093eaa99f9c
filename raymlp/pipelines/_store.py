"""Durable state under the raymlp home: pipeline runs (for status and resume), the
content-addressed cache, and schedules. JSON files, each written atomically (a temporary file
renamed over the old one), so a driver killed at any moment leaves a readable state."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from raymlp import _config

__all__ = ["atomic_write", "cache_get", "cache_put", "list_runs", "load_run", "pipelines_home",
           "run_path", "save_run"]


def pipelines_home(home: str | None = None) -> Path:
    return Path(home or _config.get().home) / "pipelines"


def atomic_write(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so a reader sees the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, default=repr)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def run_path(run_id: str, home: str | None = None) -> Path:
    return pipelines_home(home) / "runs" / run_id / "run.json"


def save_run(state: dict, home: str | None = None) -> None:
    atomic_write(run_path(state["id"], home), state)


def load_run(run_id: str, home: str | None = None) -> dict | None:
    return read_json(run_path(run_id, home))


def list_runs(home: str | None = None) -> list[dict]:
    """Every recorded run, newest first."""
    root = pipelines_home(home) / "runs"
    out = []
    for p in root.glob("*/run.json") if root.is_dir() else []:
        state = read_json(p)
        if state:
            out.append(state)
    return sorted(out, key=lambda s: s.get("started_at", 0), reverse=True)


def _cache_path(key: str, home: str | None = None) -> Path:
    return pipelines_home(home) / "cache" / key[:2] / f"{key}.json"


def cache_get(key: str, max_age_s: float | None, home: str | None = None) -> dict | None:
    """The cached outputs under ``key``, unless missing or older than ``max_age_s``."""
    entry = read_json(_cache_path(key, home))
    if entry is None:
        return None
    if max_age_s is not None and time.time() - entry.get("created_at", 0) > max_age_s:
        return None
    return entry


def cache_put(key: str, entry: dict, home: str | None = None) -> None:
    atomic_write(_cache_path(key, home), {**entry, "created_at": time.time()})
