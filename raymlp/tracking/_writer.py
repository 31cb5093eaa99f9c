"""MLflow writes off the caller's path: one background writer per process, and runs whose
pending writes coalesce into as few store calls as the writer's pace allows.

A nested run written call by call (create, params, each step's metrics, tags, end) costs ~80 ms
on the default SQLite store; buffered, a short run that starts, reports and ends between two
flushes costs three calls (create, one batch, end: ~30 ms), while a long one still shows its
metrics live. One writer per process also means no two of raymlp's writes contend for the
SQLite lock ("database is locked").
"""

from __future__ import annotations

import atexit
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

# MLflow's limits on one log_batch call.
_MAX_PARAMS, _MAX_TAGS, _MAX_METRICS = 100, 100, 1000


class Writer:
    """One thread that runs tracking writes in the order they were submitted (``first=True``
    ones ahead of the rest); a write that fails is logged and kept in :attr:`errors`, never
    raised at the caller."""

    def __init__(self, name: str = "raymlp-tracking"):
        self.name = name
        self.errors: list[str] = []
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], *args: Any, first: bool = False,
               **kwargs: Any) -> None:
        """Have the writer call ``fn(*args, **kwargs)`` (``first``: before the queued writes)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
        self._queue.put((0 if first else 1, next(self._seq), fn, args, kwargs))

    def _work(self) -> None:
        while True:
            _, _, fn, args, kwargs = self._queue.get()
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - tracking never fails the caller; kept
                self.errors.append(f"{type(exc).__name__}: {exc}")
                logger.warning("raymlp: a tracking write failed: %s: %s", type(exc).__name__, exc)
            finally:
                # Hold nothing of a finished write while waiting for the next one: what it
                # referenced (a Ray handle, say) must not be freed later in this thread.
                fn = args = kwargs = None
                self._queue.task_done()

    def flush(self, timeout_s: float = 120.0) -> bool:
        """Wait until every write submitted so far is done (False: ``timeout_s`` ran out)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True


_writer = Writer()
atexit.register(_writer.flush, 60.0)


def writer() -> Writer:
    """This process's tracking writer."""
    return _writer


class BufferedRun:
    """An MLflow run whose writes wait in memory until :meth:`flush` (called by the writer).

    Example:
        >>> run = BufferedRun("trial-3", experiment_id=eid, parent_run_id=pid, params=p)
        >>> run.log_metrics({"loss": 0.4}, step=1); run.flush_soon()
        >>> run.end("FINISHED"); writer().submit(run.flush)
    """

    def __init__(self, name: str, *, experiment_id: str, parent_run_id: str | None = None,
                 params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
                 start_time: float | None = None,
                 on_create: Callable[[str], Any] | None = None):
        from mlflow.entities import Param

        from raymlp.tracking._store import _stringify, flatten

        self.name = name
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.run_id: str | None = None
        self._on_create = on_create  # called with the run's id once it exists (in the writer)
        self._start_ms = int((start_time or time.time()) * 1000)
        self._tags = {k: _stringify(v) for k, v in (tags or {}).items()}
        self._params = [Param(k, v) for k, v in flatten(params or {}).items()]
        self._metrics: list = []
        self._end: tuple[str, int] | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()  # between the callers' buffering and the writer's flush

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Buffer the numeric entries of ``metrics`` at ``step`` (timestamped now)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step or 0)) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        with self._lock:
            self._metrics.extend(items)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from raymlp.tracking._store import _stringify

        with self._lock:
            self._tags.update({k: _stringify(v) for k, v in tags.items()})

    def end(self, status: str = "FINISHED", end_time: float | None = None) -> None:
        with self._lock:
            self._end = (status, int((end_time or time.time()) * 1000))

    def flush_soon(self, delay_s: float = 1.0) -> None:
        """Have the writer flush within ``delay_s``: writes buffered meanwhile (the next
        steps, the run's end) go in the same calls."""
        with self._lock:
            if self._timer is not None:
                return
            self._timer = threading.Timer(delay_s, self._due)
            self._timer.daemon = True
        self._timer.start()

    def _due(self) -> None:
        with self._lock:
            self._timer = None
        _writer.submit(self.flush)

    def flush(self) -> str:
        """Write what is buffered (creating the run first): in the writer's thread.

        Returns:
            the run's id.
        """
        from mlflow.entities import RunTag
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        from raymlp.tracking._store import client

        mlc = client()
        with self._lock:
            params, self._params = self._params, []
            metrics, self._metrics = self._metrics, []
            tags, self._tags = self._tags, {}
            end, self._end = self._end, None
        tag_items = [RunTag(k, v) for k, v in tags.items()]
        try:
            if self.run_id is None:
                first = {t.key: t.value for t in tag_items[:_MAX_TAGS]}
                if self.parent_run_id:
                    first[MLFLOW_PARENT_RUN_ID] = self.parent_run_id
                self.run_id = mlc.create_run(self.experiment_id, start_time=self._start_ms,
                                             tags=first, run_name=self.name).info.run_id
                tag_items = tag_items[_MAX_TAGS:]
                if self._on_create is not None:
                    self._on_create(self.run_id)
            while params or metrics or tag_items:
                mlc.log_batch(self.run_id, params=params[:_MAX_PARAMS],
                              metrics=metrics[:_MAX_METRICS], tags=tag_items[:_MAX_TAGS])
                params, metrics = params[_MAX_PARAMS:], metrics[_MAX_METRICS:]
                tag_items = tag_items[_MAX_TAGS:]
            if end is not None:
                mlc.set_terminated(self.run_id, status=end[0], end_time=end[1])
        except Exception:
            with self._lock:  # what was not written waits for the next flush: nothing is lost
                self._params[:0] = params
                self._metrics[:0] = metrics
                self._tags = {**{t.key: t.value for t in tag_items}, **self._tags}
                self._end = self._end or end
            raise
        return self.run_id
