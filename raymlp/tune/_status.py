"""Experiments on record: :func:`status`, :func:`experiments`, :func:`resume`."""

from __future__ import annotations

from typing import Any

from raymlp import _spec
from raymlp.tune import _journal


def status(name: str) -> dict[str, Any]:
    """Where experiment ``name`` stands, from its record (no Ray, no MLflow needed).

    Returns:
        dict: ``name``, ``status`` (running / finished / failed; ``running`` also after a
        crash of its driver), ``trials`` (finished), ``max_trials``, counts by trial status,
        ``best`` (the best trial's number, value, params and run id), ``stop_reason``,
        ``parent_run_id``.

    Raises:
        SpecError: there is no experiment ``name``.
    """
    record = _journal.read_record(name)
    if record is None:
        raise _spec.fail("name", name, f"the name of an experiment on record: one of "
                                       f"{_journal.names()}")
    finished = _journal.Journal(name).finished()
    metric_goal = ((record.get("spec") or {}).get("objective") or {}).get("type", "minimize")
    counts = {s: sum(r.get("status") == s for r in finished)
              for s in ("completed", "stopped", "failed")}
    best = None
    for r in finished:
        v = r.get("value")
        if r.get("status") == "failed" or v is None:
            continue
        if best is None or (v < best["value"] if metric_goal == "minimize" else v > best["value"]):
            best = {"number": r.get("number"), "value": v, "params": r.get("params"),
                    "run_id": r.get("run_id")}
    return {"name": name, "status": record.get("status"), "trials": len(finished),
            "max_trials": record.get("max_trials"), **counts, "best": best,
            "stop_reason": record.get("stop_reason"),
            "parent_run_id": record.get("parent_run_id")}


def experiments() -> list[dict[str, Any]]:
    """The status of every experiment on record (under the raymlp home), by name."""
    return [status(n) for n in _journal.names()]


def resume(name: str, *, max_trials: int | None = None, timeout_s: float | None = None):
    """Continue experiment ``name`` from its record (its trial is imported by reference).

    Args:
        max_trials: a new total number of trials (default: the recorded one).
        timeout_s: bound on this call, like ``time_budget_s``.

    Raises:
        SpecError: no such experiment, or its trial has no importable reference (resume it
            with ``Experiment.run()`` from Python instead).
    """
    from raymlp.tune._file import read

    record = _journal.read_record(name)
    if record is None:
        raise _spec.fail("name", name, f"the name of an experiment on record: one of "
                                       f"{_journal.names()}")
    data = record.get("spec")
    if not data:
        raise _spec.fail("name", name, "an experiment whose trial is importable "
                                       "(module:function); resume this one from Python with "
                                       "Experiment.run()")
    if max_trials is not None:
        data = {**data, "maxTrialCount": max_trials}
    return read(data).run(resume=True, timeout_s=timeout_s)
