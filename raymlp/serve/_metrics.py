"""Prometheus metrics of a replica: requests and latency per service, variant and status code."""

from __future__ import annotations

import asyncio
import logging

logger = logging.getLogger("raymlp.serve")


class Metrics:
    """Prometheus metrics per service, variant and status code, exported by Ray's metrics
    agent. A request only bumps local tallies; a background task hands them to Ray once a
    second (a Ray metric call per request cost ~5 % of a replica's time, measured)."""

    FLUSH_S = 1.0

    def __init__(self) -> None:
        try:
            from ray.serve import metrics

            tags = ("service", "variant", "code")
            self._requests = metrics.Counter(
                "raymlp_serve_requests", description="Inference requests per variant and code.",
                tag_keys=tags)
            self._latency = metrics.Histogram(
                "raymlp_serve_latency_ms", description="Inference latency in milliseconds.",
                boundaries=[0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1000], tag_keys=tags)
        except Exception:  # metrics are best effort: never fail a replica over them
            self._requests = self._latency = None
        self._pending: dict[tuple[str, str, int], list[float]] = {}
        self._task: asyncio.Task | None = None

    def observe(self, service: str, variant: str, status: int, seconds: float) -> None:
        if self._requests is None:
            return
        key = (service, variant, status)
        values = self._pending.get(key)
        if values is None:
            self._pending[key] = values = []
        values.append(seconds * 1000.0)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.FLUSH_S)
            try:
                self.flush()
            except Exception:  # best effort, as above: the tallies are dropped, serving goes on
                logger.warning("exporting serving metrics failed", exc_info=True)

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for (service, variant, status), values in pending.items():
            tags = {"service": service, "variant": variant, "code": str(status)}
            self._requests.inc(len(values), tags=tags)
            for ms in values:
                self._latency.observe(ms, tags=tags)
