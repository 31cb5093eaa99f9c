"""Recurring pipeline runs: a :class:`Schedule` (spec) lives in a detached, named Ray actor
(the scheduler), so it outlives the process that created it; the scheduler keeps its state in a
JSON file under the raymlp home, so a restarted scheduler picks it up again. Cron expressions
are croniter's."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from raymlp import _config, _spec
from raymlp.errors import SpecError
from raymlp.pipelines import _store

__all__ = ["SCHEDULER_NAME", "SCHEDULER_NAMESPACE", "Schedule", "ScheduleHandle",
           "get_schedule", "list_schedules", "next_fire_times"]

SCHEDULER_NAME = "raymlp-pipeline-scheduler"
SCHEDULER_NAMESPACE = "raymlp"
_TICK_S = 0.2

logger = logging.getLogger(__name__)


def next_fire_times(cron: str, n: int, *, after: float | None = None) -> list[float]:
    """The next ``n`` fire times (epoch seconds, UTC) of cron expression ``cron`` after
    ``after`` (default: now)."""
    from croniter import croniter

    it = croniter(cron, datetime.fromtimestamp(after if after is not None else time.time(),
                                               tz=timezone.utc))
    return [float(it.get_next(float)) for _ in range(n)]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Schedule:
    """Recurring runs of a pipeline, by cron expression or interval.

    Args:
        name: the schedule's name (a DNS label).
        pipeline: ``"module:attr"``, ``"path/file.py:attr"`` or a compiled ``p.yaml``, loaded by
            the scheduler on the cluster.
        params: pipeline parameters for every run.
        cron: a cron expression (``"0 3 * * *"``, UTC), or
        interval_s: seconds between runs.
        max_concurrency: runs of this schedule at once; a due run waits for a free slot.
        catchup: True runs every fire time missed (while paused or at capacity); False runs
            once and moves on to the next future time.
        start_at / end_at: epoch seconds between which it fires (None: now / for ever).
        enabled: False creates it paused.
        track: record each run in MLflow (a parent run and a nested run per step).

    Example:
        >>> Schedule(name="nightly", pipeline="flows:seed", cron="0 3 * * *").create()
    """

    name: str
    pipeline: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    cron: str | None = None
    interval_s: float | None = None
    max_concurrency: int = 1
    catchup: bool = False
    start_at: float | None = None
    end_at: float | None = None
    enabled: bool = True
    track: bool = True

    def __post_init__(self) -> None:
        _spec.name("Schedule.name", self.name)
        _spec.string("Schedule.pipeline", self.pipeline,
                     allowed="'module:attr', 'file.py:attr' or a compiled pipeline file")
        _spec.mapping("Schedule.params", self.params)
        if (self.cron is None) == (self.interval_s is None):
            raise _spec.fail("Schedule.cron", self.cron, "exactly one of cron and interval_s")
        if self.cron is not None:
            from croniter import croniter

            if not isinstance(self.cron, str) or not croniter.is_valid(self.cron):
                raise _spec.fail("Schedule.cron", self.cron, "a cron expression ('*/5 * * * *')")
        _spec.number("Schedule.interval_s", self.interval_s, minimum=0, strict=True,
                     optional=True)
        _spec.integer("Schedule.max_concurrency", self.max_concurrency, minimum=1)
        _spec.boolean("Schedule.catchup", self.catchup)
        _spec.number("Schedule.start_at", self.start_at, optional=True)
        _spec.number("Schedule.end_at", self.end_at, optional=True)
        _spec.boolean("Schedule.enabled", self.enabled)
        _spec.boolean("Schedule.track", self.track)

    def next_fire_times(self, n: int = 5, *, after: float | None = None) -> list[float]:
        """The next ``n`` fire times (epoch seconds) after ``after`` (default: now)."""
        after = time.time() if after is None else after
        if self.cron is not None:
            return next_fire_times(self.cron, n, after=after)
        first = max(after, self.start_at or after) + self.interval_s
        return [first + i * self.interval_s for i in range(n)]

    def create(self, *, address: str | None = None) -> ScheduleHandle:
        """Hand the schedule to the cluster's scheduler (started when missing); a schedule of
        the same name is replaced.

        Raises:
            SpecError: the pipeline reference cannot be loaded here.
        """
        _check_pipeline(self.pipeline)
        scheduler = _scheduler(address)
        import ray

        ray.get(scheduler.put.remote(_spec.to_data(self)))
        return ScheduleHandle(self.name)


def _check_pipeline(ref: str) -> None:
    from raymlp.pipelines._pipeline import Pipeline

    pipe = _load_pipeline(ref)
    _spec.instance("Schedule.pipeline", pipe, Pipeline, what="a raymlp.pipelines.Pipeline")


def _load_pipeline(ref: str):
    from raymlp._util import load_object
    from raymlp.pipelines._pipeline import load

    if ref.endswith((".yaml", ".yml")) and ":" not in ref:
        return load(ref)
    return load_object(ref, field="Schedule.pipeline")


def _scheduler(address: str | None = None):
    """The scheduler actor of this cluster, started (detached) when missing."""
    import ray

    import raymlp

    raymlp.init(address)
    try:
        return ray.get_actor(SCHEDULER_NAME, namespace=SCHEDULER_NAMESPACE)
    except ValueError:
        pass
    actor_cls = ray.remote(num_cpus=0, max_concurrency=64, max_restarts=-1)(_Scheduler)
    handle = actor_cls.options(name=SCHEDULER_NAME, namespace=SCHEDULER_NAMESPACE,
                               lifetime="detached", get_if_exists=True).remote(_config.get().env())
    ray.get(handle.ping.remote())
    return handle


class ScheduleHandle:
    """A schedule on the cluster: its status, runs, pause/resume, delete."""

    def __init__(self, name: str, *, address: str | None = None):
        self.name = name
        self._address = address

    def __repr__(self) -> str:
        return f"ScheduleHandle({self.name!r})"

    def _call(self, method: str, *args: Any) -> Any:
        import ray

        return ray.get(getattr(_scheduler(self._address), method).remote(self.name, *args))

    def status(self) -> dict:
        """``enabled``, ``fired`` (runs started), ``active`` (run ids running now),
        ``runs`` (recent run ids), ``next_fire_at``, and the schedule's spec."""
        return self._call("status")

    def pause(self) -> None:
        self._call("set_enabled", False)

    def resume(self) -> None:
        self._call("set_enabled", True)

    def delete(self) -> None:
        self._call("delete")


def get_schedule(name: str, *, address: str | None = None) -> ScheduleHandle:
    """The handle of schedule ``name``.

    Raises:
        SpecError: no such schedule.
    """
    handle = ScheduleHandle(name, address=address)
    handle.status()
    return handle


def list_schedules(*, address: str | None = None) -> list[dict]:
    """The status of every schedule on the cluster."""
    import ray

    return ray.get(_scheduler(address).list.remote())


class _Scheduler:
    """The detached actor: fires due schedules, runs their pipelines in threads, persists."""

    def __init__(self, env: Mapping[str, str]):
        import os

        # The creator's raymlp configuration (home, tracking store) is the runs' configuration.
        os.environ.update({k: v for k, v in env.items() if k != "RAYMLP_RAY_ADDRESS"})
        _config.reset()
        self.path = _store.pipelines_home() / "schedules.json"
        self.lock = threading.RLock()
        self.schedules: dict[str, dict] = _store.read_json(self.path) or {}
        for entry in self.schedules.values():
            # runs of a scheduler that died are no longer watched; their records stay
            entry["lost"] = entry.get("lost", []) + entry.get("active", [])
            entry["active"] = []
            entry["restarts"] = entry.get("restarts", 0) + 1
        self._save()
        self.last_error: str | None = None
        self._warm_up()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="raymlp-scheduler")
        self.thread.start()

    def ping(self) -> bool:
        return True

    @staticmethod
    def _warm_up() -> None:
        """Import what a run needs and open the tracking store before the first fire time,
        so a schedule's first run starts on time (a cold start here costs seconds)."""
        from raymlp import tracking
        from raymlp.pipelines import _runner  # noqa: F401

        try:
            tracking.experiment_id()
        except Exception as exc:  # noqa: BLE001 - a run reports the store's problem itself
            logger.warning("raymlp: the scheduler cannot open the tracking store yet: %s", exc)

    def _save(self) -> None:
        _store.atomic_write(self.path, self.schedules)

    def put(self, data: dict) -> None:
        spec = _spec.from_data(Schedule, data)
        with self.lock:
            now = time.time()
            self.schedules[spec.name] = {
                "spec": data, "enabled": spec.enabled, "fired": 0, "active": [], "runs": [],
                "next_fire_at": self._first(spec, now), "created_at": now, "restarts": 0}
            self._save()

    def _first(self, spec: Schedule, now: float) -> float:
        base = max(now, spec.start_at or now)
        if spec.cron is not None:
            return next_fire_times(spec.cron, 1, after=base - 1e-3)[0]
        return base if spec.start_at is None or spec.start_at <= now else spec.start_at

    def _next(self, spec: Schedule, fired_at: float, now: float) -> float:
        if spec.cron is not None:
            nxt = next_fire_times(spec.cron, 1, after=fired_at)[0]
            if not spec.catchup and nxt < now:
                nxt = next_fire_times(spec.cron, 1, after=now)[0]
            return nxt
        nxt = fired_at + spec.interval_s
        if not spec.catchup and nxt < now:
            nxt = now + spec.interval_s - (now - fired_at) % spec.interval_s
        return nxt

    def _entry(self, name: str) -> dict:
        if name not in self.schedules:
            raise SpecError(f"no schedule {name!r}; schedules: {sorted(self.schedules)}",
                            field="schedule", value=name,
                            allowed=f"one of {sorted(self.schedules)}")
        return self.schedules[name]

    def status(self, name: str) -> dict:
        with self.lock:
            return {"name": name, **self._entry(name)}

    def list(self) -> list[dict]:
        with self.lock:
            return [{"name": n, **e} for n, e in sorted(self.schedules.items())]

    def set_enabled(self, name: str, enabled: bool) -> None:
        with self.lock:
            entry = self._entry(name)
            entry["enabled"] = enabled
            if enabled:
                spec = _spec.from_data(Schedule, entry["spec"])
                if not spec.catchup:
                    entry["next_fire_at"] = max(entry["next_fire_at"], time.time())
            self._save()

    def delete(self, name: str) -> None:
        with self.lock:
            self._entry(name)
            del self.schedules[name]
            self._save()

    def _loop(self) -> None:
        while True:
            try:
                self._tick()
            except Exception as exc:  # noqa: BLE001 - a bad schedule must not stop the others
                self.last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(_TICK_S)

    def _tick(self) -> None:
        now = time.time()
        with self.lock:
            for name, entry in list(self.schedules.items()):
                spec = _spec.from_data(Schedule, entry["spec"])
                if not entry["enabled"] or entry["next_fire_at"] > now:
                    continue
                if spec.end_at is not None and entry["next_fire_at"] > spec.end_at:
                    continue
                if len(entry["active"]) >= spec.max_concurrency:
                    continue
                fired_at = entry["next_fire_at"]
                entry["next_fire_at"] = self._next(spec, fired_at, now)
                entry["fired"] += 1
                token = f"pending-{entry['fired']}"
                entry["active"].append(token)
                self._save()
                threading.Thread(target=self._run, args=(name, spec, token), daemon=True).start()

    def _run(self, name: str, spec: Schedule, token: str) -> None:
        from raymlp.pipelines._runner import Runner

        run_id = None
        try:
            pipe = _load_pipeline(spec.pipeline)
            params = pipe.check_params(dict(spec.params))
            runner = Runner(pipe, params, mode="ray", cache=True, track=spec.track,
                            progress=False)
            run_id = runner.state["id"]
            runner.state["schedule"] = name
            with self.lock:
                entry = self.schedules.get(name)
                if entry is not None:
                    entry["active"] = [run_id if a == token else a for a in entry["active"]]
                    entry["runs"] = (entry["runs"] + [run_id])[-50:]
                    self._save()
            runner.run()
        except Exception as exc:  # noqa: BLE001 - recorded on the schedule
            with self.lock:
                entry = self.schedules.get(name)
                if entry is not None:
                    entry["last_error"] = f"{type(exc).__name__}: {exc}"
        finally:
            with self.lock:
                entry = self.schedules.get(name)
                if entry is not None:
                    entry["active"] = [a for a in entry["active"] if a not in (token, run_id)]
                    self._save()
