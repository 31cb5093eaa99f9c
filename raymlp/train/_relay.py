"""The metric relay: Ray Train's controller hands each report to the driver, which logs it.

Two halves meet in Ray's GCS key-value store (through :mod:`raymlp._ray_compat`), which the
controller and the driver both reach on any cluster without a new actor:

- :class:`Forwarder` runs in Ray Train's controller. It only writes records: importing MLflow
  and opening the store there took ~2.5 s of every job, inside the control loop that also
  consumes the workers' reports (each worker's next ``ray.train.report`` waited for it). It also
  holds the job's deadline and stops the run when it passes.
- :class:`Relay` runs in the driver, in a thread of its own: it logs the records to the MLflow
  run and hands each report to a listener (the console's progress), so neither MLflow nor the
  console ever sits in Ray Train's report path.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from raymlp import _ray_compat

logger = logging.getLogger(__name__)

NAMESPACE = "raymlp-train"

# Deadlines armed in this process (the controller), by run id: Ray unpickles the callbacks more
# than once when it builds the controller.
_armed: set[str] = set()


class Forwarder(_ray_compat.UserCallback):
    """Runs in Ray Train's controller: sends every report and failure to the driver's relay.

    Args:
        run_id: the MLflow run; records are keyed under it.
        deadline: ``time.time()`` after which the job is stopped (None: no bound). The
            controller runs on the driver's node, so both read the same clock.
    """

    def __init__(self, run_id: str, deadline: float | None = None):
        self.run_id = run_id
        self.deadline = deadline
        self._seq = 0

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.deadline is not None and _in_actor() and self.run_id not in _armed:
            # Unpickled in the controller actor: the bound is kept there, where the run can be
            # stopped without the driver holding the controller's handle.
            _armed.add(self.run_id)
            timer = threading.Timer(max(0.0, self.deadline - time.time()), self._stop_run)
            timer.daemon = True
            timer.start()

    def _stop_run(self) -> None:
        self._send({"timed_out": True})
        _ray_compat.abort_train_controller()

    def _send(self, record: dict) -> None:
        self._seq += 1
        # Time first: keys stay ordered even if Ray restarts the controller (and _seq).
        key = f"{self.run_id}/{time.time_ns():020d}-{self._seq:08d}"
        _ray_compat.kv_put(key, json.dumps(record), namespace=NAMESPACE)

    def after_report(self, run_context, metrics, checkpoint) -> None:
        m = metrics[0] if metrics else {}
        self._send({"metrics": {k: v for k, v in m.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool)},
                    "checkpoint": checkpoint.path if checkpoint is not None else None})

    def after_exception(self, run_context, worker_exceptions) -> None:
        text = "; ".join(f"rank {r}: {e!r}" for r, e in sorted(worker_exceptions.items()))
        self._send({"error": text[:5000]})


def _in_actor() -> bool:
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


class Relay:
    """Runs in the driver while a job trains: logs the controller's records to the MLflow run.

    Args:
        run: the job's :class:`raymlp.tracking.Run`.
        on_report: called with each report's metrics (in the relay's thread), e.g. to update
            the console's progress.
        interval_s: how often the store is polled.
    """

    def __init__(self, run, *, on_report: Callable[[dict[str, Any]], None] | None = None,
                 interval_s: float = 0.25):
        self._run = run
        self._on_report = on_report
        self._interval_s = interval_s
        self._reports = 0
        self.timed_out = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="raymlp-train-relay", daemon=True)

    def __enter__(self) -> Relay:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.drain()  # what the controller sent after the last poll

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.drain()
            except Exception as exc:  # keep relaying; the next drain retries what is left
                logger.warning("raymlp: logging training metrics to MLflow failed: %s", exc)

    def drain(self) -> None:
        """Log every record waiting in the store, oldest first."""
        prefix = f"{self._run.run_id}/"
        for key in sorted(_ray_compat.kv_keys(prefix, namespace=NAMESPACE)):
            value = _ray_compat.kv_get(key, namespace=NAMESPACE)
            _ray_compat.kv_delete(key, namespace=NAMESPACE)
            if value is not None:
                self._log(json.loads(value))

    def _log(self, record: dict) -> None:
        if record.get("timed_out"):
            self.timed_out = True
            return
        if "error" in record:
            self._run.set_tags({"raymlp.last_worker_error": record["error"]})
            return
        m = record["metrics"]
        step = int(m.get("epoch", self._reports))
        self._reports += 1
        self._run.log_metrics(m, step=step)
        if record["checkpoint"] is not None:
            self._run.set_tags({"raymlp.latest_checkpoint": record["checkpoint"]})
        if self._on_report is not None:
            try:
                self._on_report(m)
            except Exception as exc:  # the console must never stop the bookkeeping
                logger.debug("raymlp: progress update failed: %s", exc)
