"""Payload logging: every request and its answer, as JSON, to a file or an HTTP collector.

A replica hands records to a background thread and never waits for the sink: a slow or broken
sink costs dropped log records (counted and warned about), never a slow or failed request.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import urllib.request
from typing import Any

logger = logging.getLogger("raymlp.serve")

_QUEUE_SIZE = 10_000
_BATCH = 256


def _decode(raw: Any) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, TypeError):
        return raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else raw


class PayloadLogger:
    """Ships request/response records to ``sink``: a file path (JSON lines, appended) or an
    ``http(s)://`` URL (JSON arrays POSTed in batches)."""

    def __init__(self, sink: str):
        self.sink = sink
        self.dropped = 0
        self._queue: queue.Queue = queue.Queue(maxsize=_QUEUE_SIZE)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raymlp-payload-log", daemon=True)
        self._thread.start()

    def log(self, record: dict, request: Any, response: Any) -> None:
        """Queue one record; ``request``/``response`` are raw bodies, decoded off the hot path."""
        try:
            self._queue.put_nowait((record, request, response))
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                items = [self._queue.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(items) < _BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            records = [{**rec, "request": _decode(req), "response": _decode(resp)}
                       for rec, req, resp in items]
            try:
                self._write(records)
            except Exception as exc:  # the sink is down: drop, say so, keep serving
                self.dropped += len(records)
                logger.warning("payload log sink %s failed (%s); %d record(s) dropped so far",
                               self.sink, exc, self.dropped)

    def _write(self, records: list[dict]) -> None:
        if self.sink.startswith(("http://", "https://")):
            req = urllib.request.Request(
                self.sink, data=json.dumps(records).encode(), method="POST",
                headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                resp.read()
            return
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
        os.makedirs(os.path.dirname(os.path.abspath(self.sink)), exist_ok=True)
        # One O_APPEND write per batch: replicas sharing the file do not interleave lines.
        fd = os.open(self.sink, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def record(service: str, endpoint: str, variant: Any, status: int, started: float,
           request_id: str | None) -> dict:
    """The metadata of one request's log record."""
    return {
        "time": time.time(), "service": service, "endpoint": endpoint, "id": request_id,
        "variant": getattr(variant, "name", None), "model_uri": getattr(variant, "uri", None),
        "model_version": getattr(variant, "version", None), "status": status,
        "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
    }
