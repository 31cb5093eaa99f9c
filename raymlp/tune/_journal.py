"""An experiment's record on disk: what it is, and an append-only journal of its trials.

Under ``<raymlp home>/tune/<name>/``:

- ``experiment.json``: the spec as plain data (for ``raymlp tune resume NAME``), the MLflow
  parent run, the status and why it ended; replaced atomically (write, fsync, rename);
- ``trials.jsonl``: one JSON line per event, appended: ``start`` (a trial's params), ``run``
  (its MLflow run) and ``end`` (its status, value, metrics, run, error). Every line survives a
  crash of the driver; ``end`` lines are fsync'd, so finished trials outlive a power loss too
  (a ``start`` lost that way is a trial the searcher proposes afresh). A line cut short by a
  crash is skipped on reading, so one bad write loses at most that event, never the
  experiment. Nothing here is a pickle.

A resumed experiment counts the ``end`` records, teaches them to the searcher, and reruns the
params that started but never ended.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raymlp import _config

EXPERIMENT_FILE = "experiment.json"
TRIALS_FILE = "trials.jsonl"


def root() -> Path:
    """Where experiment records live."""
    return Path(_config.get().home) / "tune"


def folder(name: str) -> Path:
    return root() / name


def exists(name: str) -> bool:
    return (folder(name) / EXPERIMENT_FILE).exists()


def read_record(name: str) -> dict[str, Any] | None:
    path = folder(name) / EXPERIMENT_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_record(name: str, record: Mapping[str, Any]) -> None:
    """Replace the experiment's record atomically."""
    d = folder(name)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{EXPERIMENT_FILE}.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({**record, "updated": time.time()}, f, indent=1, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, d / EXPERIMENT_FILE)


def update_record(name: str, **fields: Any) -> dict[str, Any]:
    record = {**(read_record(name) or {}), **fields}
    write_record(name, record)
    return record


def reset(name: str) -> None:
    """Forget a previous experiment of this name (its MLflow runs stay)."""
    d = folder(name)
    for f in (EXPERIMENT_FILE, TRIALS_FILE):
        (d / f).unlink(missing_ok=True)


def names() -> list[str]:
    base = root()
    if not base.is_dir():
        return []
    return sorted(p.parent.name for p in base.glob(f"*/{EXPERIMENT_FILE}"))


class Journal:
    """The append-only trial journal of one experiment (thread-safe)."""

    def __init__(self, name: str):
        self.path = folder(name) / TRIALS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "time": time.time(), **fields}, default=_plain)
        with self._lock, open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()  # in the OS from here on: survives a crash of this process
            if event == "end":  # a finished trial survives an OS crash or power loss too
                os.fsync(f.fileno())

    def events(self) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # cut short by a crash
        return out

    def finished(self) -> list[dict[str, Any]]:
        """The ``end`` record of each finished trial, oldest first."""
        return [e for e in self.events() if e.get("event") == "end"]

    def pending(self) -> list[dict[str, Any]]:
        """Params of trials that started but never ended (running when the driver stopped)."""
        events = self.events()
        ended = {_key(e["params"]) for e in events if e.get("event") == "end"}
        out, seen = [], set()
        for e in events:
            if e.get("event") == "start" and (k := _key(e["params"])) not in ended | seen:
                seen.add(k)
                out.append(e["params"])
        return out

    def started_runs(self) -> list[str]:
        """MLflow runs of trials that started but never ended."""
        events = self.events()
        ended = {e.get("trial_id") for e in events if e.get("event") == "end"}
        return [e["run_id"] for e in events if e.get("event") == "run" and
                e.get("trial_id") not in ended]


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=_plain)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)
