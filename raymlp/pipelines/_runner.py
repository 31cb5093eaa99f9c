"""Running a pipeline's graph: steps as Ray tasks (or in-process), caching, retries, timeouts,
durable run state for resume, and MLflow lineage written off the steps' critical path."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raymlp import _config, tracking
from raymlp.pipelines import _store
from raymlp.pipelines._component import (
    StepContext,
    execute,
    final_status_value,
)
from raymlp.pipelines._dsl import evaluate

if TYPE_CHECKING:  # pragma: no cover
    from raymlp.pipelines._pipeline import Pipeline

__all__ = ["DONE", "TERMINAL", "Runner", "flush_tracking", "instance_name"]

SUCCEEDED, CACHED, FAILED, SKIPPED, NOT_RUN = "SUCCEEDED", "CACHED", "FAILED", "SKIPPED", "NOT_RUN"
PENDING, RUNNING, RETRYING = "PENDING", "RUNNING", "RETRYING"
DONE = (SUCCEEDED, CACHED)
TERMINAL = (SUCCEEDED, CACHED, FAILED, SKIPPED, NOT_RUN)
_WAIT, _OK, _SKIP, _FAIL = "wait", "ok", "skip", "fail"


def instance_name(task: str, idx: tuple[int, ...]) -> str:
    return task + "".join(f"[{i}]" for i in idx)


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, default=repr, separators=(",", ":"))


# --- tracking, off the critical path --------------------------------------------------------------
# Step runs are written by the process's tracking writer (raymlp.tracking.writer()): a step's
# MLflow run never delays the next step, and no two writes contend for the SQLite lock.

def flush_tracking(timeout_s: float = 120.0) -> None:
    """Wait until every pipeline's MLflow records of this process are written."""
    tracking.writer().flush(timeout_s)


def _log_step(runner: Runner, name: str, record: dict) -> None:
    parent_id, experiment_id = runner.state["mlflow_run_id"], runner.experiment_id
    if not parent_id:
        return
    tags = {"raymlp.kind": "pipeline-step", "raymlp.pipeline.step": name,
            "raymlp.pipeline.cache_hit": str(record["status"] == CACHED).lower(),
            "raymlp.pipeline.attempt": str(record.get("attempts", 0)),
            "raymlp.pipeline.code_hash": record.get("code_hash", ""),
            "raymlp.pipeline.status": record["status"]}
    if record.get("error"):
        tags["raymlp.pipeline.error"] = record["error"][:5000]
    if record.get("code_changed"):
        tags["raymlp.pipeline.code_changed"] = record["code_changed"]
    for art_name, art in (record.get("artifacts") or {}).items():
        tags[f"raymlp.artifact.{art_name}.uri"] = art["uri"]
        tags[f"raymlp.artifact.{art_name}.digest"] = art.get("digest", "")
    for inp, digest in (record.get("input_digests") or {}).items():
        tags[f"raymlp.input.{inp}.digest"] = digest
    params = {k: _short(v) for k, v in (record.get("params") or {}).items()}
    run = tracking.BufferedRun(name, experiment_id=experiment_id, parent_run_id=parent_id,
                               params=params, tags=tags, start_time=record.get("started_at"))
    run.log_metrics({**(record.get("metrics") or {}),
                     "duration_s": float(record.get("duration_s") or 0.0)}, step=0)
    run.end("FAILED" if record["status"] == FAILED else "FINISHED", record.get("ended_at"))
    run.flush()


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    return text[:6000]


# --- running the steps ----------------------------------------------------------------------------

_remote: list[Any] = [None]


def _remote_execute():
    import ray

    if _remote[0] is None:
        # Retries are the runner's (with backoff and a record of each attempt), not Ray's.
        _remote[0] = ray.remote(max_retries=0)(execute)
    return _remote[0]


class Runner:
    """Runs one pipeline run to its end (a new run, or a resumed one)."""
    def __init__(self, pipe: Pipeline, params: Mapping[str, Any], *, mode: str, cache: bool,
                 track: bool, state: dict | None = None, progress: bool = True):
        self.pipe = pipe
        self.graph = pipe.graph
        self.mode = mode
        self.cache = cache
        self.track = track
        self.show_progress = progress
        self.cfg = _config.get()
        self.tasks = self.graph["tasks"]
        self.groups = self.graph["groups"]
        self.components = pipe.components
        self.depth = {g: self._loop_depth(g) for g in self.groups}
        self.running: dict[Any, tuple[str, float, float | None]] = {}
        self.func_refs: dict[str, Any] = {}
        self.dirty = True
        if state is None:
            run_id = f"{pipe.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
            state = {"id": run_id, "pipeline": pipe.name, "version": pipe.version,
                     "reference": pipe.reference, "reference_file": pipe.reference_file,
                     "spec": pipe.spec_dict(), "params": dict(params),
                     "mode": mode, "cache": cache, "status": RUNNING, "started_at": time.time(),
                     "steps": {}, "items": {}, "mlflow_run_id": None, "resumes": 0}
        self.state = state
        self.params = state["params"]
        self.steps: dict[str, dict] = state["steps"]
        self.items: dict[str, list] = state["items"]
        self.art_root = Path(self.cfg.artifact_root.removeprefix("file://")) / "pipelines" / \
            pipe.name / state["id"]
        self.log_root = _store.run_path(state["id"]).parent / "logs"
        self.experiment_id: str | None = None
        self.bar = None
        self.parent_ready = threading.Event()

    # -- structure
    def _loop_depth(self, gid: str | None) -> int:
        n = 0
        while gid is not None:
            if self.groups[gid]["kind"] == "loop":
                n += 1
            gid = self.groups[gid]["parent"]
        return n

    def _loops_of(self, gid: str | None) -> list[str]:
        out = []
        while gid is not None:
            if self.groups[gid]["kind"] == "loop":
                out.append(gid)
            gid = self.groups[gid]["parent"]
        return out[::-1]

    def _items_key(self, loop: str, prefix: tuple[int, ...]) -> str:
        return instance_name(loop, prefix)

    def instances(self, task: str) -> list[tuple[int, ...]] | None:
        """The index tuples of ``task``'s instances, or None while a loop's items are unknown."""
        prefixes: list[tuple[int, ...]] = [()]
        for loop in self._loops_of(self.tasks[task]["group"]):
            nxt = []
            for p in prefixes:
                items = self.items.get(self._items_key(loop, p))
                if items is None:
                    if self._group_state(loop, p) == _SKIP:
                        continue
                    return None
                nxt.extend((*p, i) for i in range(len(items)))
            prefixes = nxt
        return prefixes

    # -- values
    def _resolve(self, spec: Mapping[str, Any], idx: tuple[int, ...]) -> tuple[str, Any]:
        if "value" in spec:
            return _OK, spec["value"]
        if "param" in spec:
            return _OK, self.params[spec["param"]]
        if "item" in spec:
            loop = spec["item"]
            d = self.depth[loop]
            items = self.items.get(self._items_key(loop, idx[:d - 1]))
            if items is None:
                return _WAIT, None
            item = items[idx[d - 1]]
            return _OK, item[spec["key"]] if spec.get("key") else item
        if "task" in spec:
            t = spec["task"]
            d = self.depth[self.tasks[t]["group"]]
            return self._output_of(instance_name(t, idx[:d]), spec["output"])
        if "collected" in spec:
            inner = spec["collected"]
            t = inner["task"]
            loops = self._loops_of(self.tasks[t]["group"])
            prefix = idx[:len(loops) - 1]
            loop = loops[-1]
            items = self.items.get(self._items_key(loop, prefix))
            if items is None:
                state = self._group_state(loop, prefix)
                return (_SKIP, None) if state == _SKIP else (_FAIL, None) if state == _FAIL \
                    else (_WAIT, None)
            values = []
            for i in range(len(items)):
                status, value = self._output_of(instance_name(t, (*prefix, i)), inner["output"])
                if status in (_WAIT, _FAIL):
                    return status, None
                if status == _OK:
                    values.append(value)
            return _OK, values
        if "status" in spec:
            return _OK, None
        raise ValueError(f"unknown input spec {spec!r}")

    def _output_of(self, inst: str, output: str) -> tuple[str, Any]:
        rec = self.steps.get(inst)
        status = rec["status"] if rec else PENDING
        if status in DONE:
            if output in rec.get("artifacts", {}):
                return _OK, rec["artifacts"][output]
            return _OK, rec["values"].get(output)
        if status == SKIPPED:
            return _SKIP, None
        if status in (FAILED, NOT_RUN):
            return _FAIL, None
        return _WAIT, None

    def _group_state(self, gid: str, idx: tuple[int, ...]) -> str:
        """Whether steps in group ``gid`` (at loop index ``idx``) run, are skipped, wait, or
        can never run because something they read failed."""
        chain = []
        g: str | None = gid
        while g is not None:
            chain.append(g)
            g = self.groups[g]["parent"]
        for g in reversed(chain):
            group = self.groups[g]
            if group["kind"] == "condition":
                gidx = idx[:self.depth[g]]
                for term in group["conditions"]:
                    ls, left = self._resolve(term["left"], gidx)
                    rs, right = self._resolve(term["right"], gidx)
                    for s in (ls, rs):
                        if s != _OK:
                            return s
                    if evaluate(term["op"], left, right) != term["expect"]:
                        return _SKIP
            elif group["kind"] == "loop" and g != gid:
                pass
        return _OK

    # -- the run
    def run(self) -> dict:
        from raymlp import _console

        self._start_tracking()
        total = len(self.tasks)
        bar = self.bar = _console.progress(f"pipeline {self.pipe.name}", unit="step") \
            if self.show_progress else None
        if bar is not None:
            bar.note(f"run {self.state['id']}")
        try:
            self._loop(bar, total)
        except BaseException:
            self._save(force=True)
            if bar is not None:
                bar.close(failed=True)
            raise
        failed = [n for n, r in self.steps.items() if r["status"] == FAILED]
        self.state["status"] = FAILED if failed else SUCCEEDED
        self.state["ended_at"] = time.time()
        self.state["duration_s"] = self.state["ended_at"] - self.state["started_at"]
        self.state["outputs"] = self._pipeline_outputs()
        self._save(force=True)
        self._end_tracking()
        if bar is not None:
            bar.close(failed=bool(failed))
        return self.state

    def _pipeline_outputs(self) -> dict[str, Any]:
        out = {}
        for name, spec in self.graph.get("outputs", {}).items():
            status, value = self._resolve(spec, ())
            out[name] = value if status == _OK else None
        return out

    def _save(self, force: bool = False) -> None:
        if self.dirty or force:
            _store.save_run(self.state)
            self.dirty = False

    def _loop(self, bar, total: int) -> None:
        while True:
            progressed = self._schedule()
            self._save()
            if self.running:
                self._collect(timeout_s=0.05 if progressed else 0.5)
                continue
            retry_at = [r["retry_at"] for r in self.steps.values() if r["status"] == RETRYING]
            if retry_at:
                time.sleep(max(0.0, min(min(retry_at) - time.time(), 0.5)))
                continue
            if progressed:
                continue
            if self._run_exit_tasks():
                continue
            # Nothing can move: whatever is left can never run.
            for task in self.tasks:
                for idx in self.instances(task) or [()]:
                    rec = self._record(task, idx)
                    if rec["status"] not in TERMINAL:
                        self._finish(rec, NOT_RUN)
            self._save(force=True)
            return

    def _record(self, task: str, idx: tuple[int, ...]) -> dict:
        name = instance_name(task, idx)
        rec = self.steps.get(name)
        if rec is None:
            rec = self.steps[name] = {"task": task, "idx": list(idx), "status": PENDING,
                                      "attempts": 0}
            self.dirty = True
        return rec

    def _expand_loops(self) -> bool:
        changed = False
        for gid, group in self.groups.items():
            if group["kind"] != "loop":
                continue
            parent_loops = self._loops_of(group["parent"])
            prefixes: list[tuple] = [()]
            for loop in parent_loops:
                nxt = []
                for p in prefixes:
                    items = self.items.get(self._items_key(loop, p))
                    if items is not None:
                        nxt.extend((*p, i) for i in range(len(items)))
                prefixes = nxt
            for p in prefixes:
                key = self._items_key(gid, p)
                if key in self.items:
                    continue
                if self._group_state(group["parent"], p) != _OK:
                    continue
                status, value = self._resolve(group["items"], p)
                if status == _OK:
                    self.items[key] = list(value)
                    changed = self.dirty = True
        return changed

    def _schedule(self) -> bool:
        progressed = self._expand_loops()
        for task, spec in self.tasks.items():
            if spec.get("exit_of"):
                continue
            idxs = self.instances(task)
            if idxs is None:
                continue
            for idx in idxs:
                rec = self._record(task, idx)
                if rec["status"] in TERMINAL or rec["status"] == RUNNING:
                    continue
                if rec["status"] == RETRYING and rec["retry_at"] > time.time():
                    continue
                verdict = self._ready(task, idx)
                if verdict == _WAIT:
                    continue
                if verdict in (_SKIP, _FAIL):
                    self._finish(rec, SKIPPED if verdict == _SKIP else NOT_RUN)
                    progressed = True
                    continue
                if not self._loop_slot_free(task, idx):
                    continue
                self._dispatch(task, idx, rec)
                progressed = True
        return progressed

    def _loop_slot_free(self, task: str, idx: tuple[int, ...]) -> bool:
        loops = self._loops_of(self.tasks[task]["group"])
        for depth, loop in enumerate(loops, start=1):
            limit = self.groups[loop].get("parallelism")
            if not limit:
                continue
            prefix = idx[:depth]
            active = {tuple(self.steps[n]["idx"][:depth]) for n, *_ in self.running.values()
                      if tuple(self.steps[n]["idx"][:depth - 1]) == prefix[:-1]
                      and loop in self._loops_of(self.tasks[self.steps[n]["task"]]["group"])}
            if prefix not in active and len(active) >= limit:
                return False
        return True

    def _ready(self, task: str, idx: tuple[int, ...]) -> str:
        spec = self.tasks[task]
        gstate = self._group_state(spec["group"], idx)
        if gstate != _OK:
            return gstate
        for other in spec.get("after", []):
            other_idxs = self.instances(other)
            if other_idxs is None:
                return _WAIT
            d = min(self.depth[self.tasks[other]["group"]], len(idx))
            for oi in other_idxs:
                if tuple(oi[:d]) != tuple(idx[:d]):
                    continue
                rec = self.steps.get(instance_name(other, oi))
                status = rec["status"] if rec else PENDING
                if status in (FAILED, NOT_RUN):
                    return _FAIL
                if status not in TERMINAL:
                    return _WAIT
        worst = _OK
        for inp in spec["inputs"].values():
            status, _ = self._resolve(inp, idx)
            if status == _FAIL:
                return _FAIL
            if status == _WAIT:
                worst = _WAIT
            elif status == _SKIP and worst == _OK:
                worst = _SKIP
        return worst

    def _run_exit_tasks(self) -> bool:
        ran = False
        for task, spec in self.tasks.items():
            if not spec.get("exit_of"):
                continue
            rec = self._record(task, ())
            if rec["status"] in TERMINAL or rec["status"] in (RUNNING, RETRYING):
                continue
            self._dispatch(task, (), rec)
            ran = True
        if ran and self.mode == "ray":
            while self.running:
                self._collect(timeout_s=0.5)
        return ran

    def final_status(self) -> dict:
        failed = [n for n, r in self.steps.items() if r["status"] == FAILED
                  and not self.tasks[r["task"]].get("exit_of")]
        error = ""
        if failed:
            error = f"step {failed[0]!r} failed: {self.steps[failed[0]].get('error', '')}"
        return {"state": FAILED if failed else SUCCEEDED, "pipeline_run_id": self.state["id"],
                "error_message": error, "failed_tasks": failed}

    # -- one step
    def _dispatch(self, task: str, idx: tuple[int, ...], rec: dict) -> None:
        spec = self.tasks[task]
        comp = self.components[spec["component"]]
        options = {**vars(comp.options), **spec.get("options", {})}
        name = instance_name(task, idx)
        params: dict[str, Any] = {}
        arts_in: dict[str, dict] = {}
        for arg, inp in spec["inputs"].items():
            if "status" in inp:
                params[arg] = final_status_value(self.final_status())
                continue
            _, value = self._resolve(inp, idx)
            if comp.inputs[arg]["kind"] == "artifact":
                arts_in[arg] = value
            else:
                params[arg] = value
        for arg, meta in comp.inputs.items():
            if arg not in spec["inputs"] and "default" in meta:
                params[arg] = meta["default"]
        digests = {k: v.get("digest", "") for k, v in arts_in.items()}
        loggable = {k: v for k, v in params.items() if comp.inputs[k]["kind"] == "param"}
        previous_hash = rec.get("code_hash")
        if previous_hash and previous_hash != comp.code_hash and rec["status"] in (
                FAILED, RETRYING, RUNNING, NOT_RUN, PENDING):
            rec["code_changed"] = f"{previous_hash[:12]} -> {comp.code_hash[:12]}"
        rec.update(params=loggable, input_digests=digests, code_hash=comp.code_hash,
                   started_at=time.time())
        key = None
        if not spec.get("exit_of"):
            key = hashlib.sha256(_canonical({"code": comp.code_hash, "params": loggable,
                                             "artifacts": digests}).encode()).hexdigest()
        rec["cache_key"] = key
        if key and options["cache"] and self.cache:
            entry = _store.cache_get(key, options["max_age_s"])
            if entry is not None:
                rec.update(values=entry["values"], artifacts=entry["artifacts"],
                           metrics=entry.get("metrics", {}), duration_s=0.0)
                self._finish(rec, CACHED)
                return
        arts_out = {n: {"type": m["type"], "uri": str(self.art_root / name / n)}
                    for n, m in comp.outputs.items() if m["kind"] == "artifact"}
        rec["attempts"] = rec.get("attempts", 0) + 1
        rec["status"] = RUNNING
        self.dirty = True
        ctx = StepContext(run_id=self.state["id"], pipeline=self.pipe.name,
                          version=self.pipe.version, step=name, attempt=rec["attempts"],
                          mlflow_run_id=self._parent_run_id(), input_digests=digests)
        call = {"ctx": ctx, "params": params, "artifacts_in": arts_in, "artifacts_out": arts_out,
                "outputs": comp.outputs, "log_path": str(self.log_root / f"{name}.log")}
        timeout = options["timeout_s"]
        if self.mode == "local":
            try:
                result = execute(comp.func, **call)
            except Exception as exc:  # noqa: BLE001 - a step's failure is recorded, not raised
                self._failed(rec, options, f"{type(exc).__name__}: {exc}")
                if rec["status"] == RETRYING:
                    time.sleep(max(0.0, rec["retry_at"] - time.time()))
                return
            self._succeeded(rec, result)
            return
        import ray

        if comp.name not in self.func_refs:
            from raymlp._pickling import ship_by_value

            ship_by_value(comp.func)
            self.func_refs[comp.name] = ray.put(comp.func)
        resources: dict[str, Any] = {"num_cpus": options["cpus"], "num_gpus": options["gpus"],
                                     "name": f"{self.pipe.name}.{name}"}
        if options["memory"]:
            resources["memory"] = options["memory"]
        ref = _remote_execute().options(**resources).remote(self.func_refs[comp.name], **call)
        deadline = time.monotonic() + timeout if timeout else None
        self.running[ref] = (name, time.monotonic(), deadline)

    def _collect(self, timeout_s: float) -> None:
        import ray

        refs = list(self.running)
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s, fetch_local=True)
        if not done:
            done, _ = ray.wait(refs, num_returns=1, timeout=0)
        for ref in done:
            name, _, _ = self.running.pop(ref)
            rec = self.steps[name]
            comp = self.components[self.tasks[rec["task"]]["component"]]
            options = {**vars(comp.options), **self.tasks[rec["task"]].get("options", {})}
            try:
                result = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a step's failure is recorded, not raised
                cause = getattr(exc, "cause", None) or exc
                self._failed(rec, options, f"{type(cause).__name__}: {cause}")
                continue
            self._succeeded(rec, result)
        now = time.monotonic()
        for ref, (name, _, deadline) in list(self.running.items()):
            if deadline is not None and now > deadline:
                ray.cancel(ref, force=True)
                self.running.pop(ref)
                rec = self.steps[name]
                comp = self.components[self.tasks[rec["task"]]["component"]]
                options = {**vars(comp.options), **self.tasks[rec["task"]].get("options", {})}
                self._failed(rec, options, f"TimeoutError: the step ran longer than "
                                           f"timeout_s={options['timeout_s']:g}")

    def _succeeded(self, rec: dict, result: dict) -> None:
        rec.update(values=result["values"], artifacts=result["artifacts"],
                   metrics=result["metrics"], duration_s=result["duration_s"], error=None)
        if rec.get("cache_key"):
            _store.cache_put(rec["cache_key"], {"values": result["values"],
                                                "artifacts": result["artifacts"],
                                                "metrics": result["metrics"]})
        self._finish(rec, SUCCEEDED)

    def _failed(self, rec: dict, options: dict, error: str) -> None:
        rec["error"] = error
        if rec["attempts"] <= options["retries"]:
            rec["status"] = RETRYING
            rec["retry_at"] = time.time() + options["backoff_s"] * 2 ** (rec["attempts"] - 1)
            self.dirty = True
            return
        self._finish(rec, FAILED)

    def _finish(self, rec: dict, status: str) -> None:
        rec["status"] = status
        rec["ended_at"] = time.time()
        self.dirty = True
        if self.bar is not None:
            self.bar.update(1, **{status.lower(): sum(r["status"] == status
                                                      for r in self.steps.values())})
        if status in (SUCCEEDED, CACHED, FAILED) and self.track:
            name = instance_name(rec["task"], tuple(rec["idx"]))
            record = json.loads(json.dumps(rec, default=repr))
            tracking.writer().submit(_log_step, self, name, record)

    # -- tracking
    def _start_tracking(self) -> None:
        """Open the run's MLflow parent run in the background: a run that is all cache hits
        never waits for MLflow; a step that runs waits for the parent id (to nest under it)."""
        self.parent_ready = threading.Event()
        if not self.track:
            self.parent_ready.set()
            return
        resumed = bool(self.state.get("mlflow_run_id"))
        if resumed:
            self.state["resumes"] = self.state.get("resumes", 0) + 1

        def start() -> None:
            try:
                self.experiment_id = tracking.experiment_id()
                if resumed:
                    return
                run = tracking.start_run(
                    f"pipeline {self.pipe.name}", params={**self.params},
                    tags={"raymlp.kind": "pipeline", "raymlp.pipeline.name": self.pipe.name,
                          "raymlp.pipeline.version": self.pipe.version,
                          "raymlp.pipeline.run_id": self.state["id"]})
                self.state["mlflow_run_id"] = run.run_id
                self.dirty = True
            finally:
                self.parent_ready.set()

        tracking.writer().submit(start, first=True)

    def _parent_run_id(self) -> str | None:
        self.parent_ready.wait(timeout=120)
        return self.state.get("mlflow_run_id")

    def _end_tracking(self) -> None:
        if not self.track:
            return

        status = self.state["status"]
        summary = {"raymlp.pipeline.status": status,
                   "raymlp.pipeline.cache_hits": sum(r["status"] == CACHED
                                                     for r in self.steps.values()),
                   "raymlp.pipeline.resumes": self.state.get("resumes", 0)}

        def end() -> None:
            if not self.state.get("mlflow_run_id"):
                return
            run = tracking.Run(self.state["mlflow_run_id"])
            run.set_tags(summary)
            run.log_metrics({"duration_s": self.state.get("duration_s", 0.0)})
            run.end("FINISHED" if status == SUCCEEDED else "FAILED")
            _store.save_run(self.state)  # with the parent run's id, opened in the background

        tracking.writer().submit(end)


def reset_for_resume(state: dict) -> None:
    """Forget what did not finish, so a resumed run reruns exactly that (and the exit
    handlers, which report the new outcome)."""
    tasks = state["spec"]["tasks"]
    for rec in state["steps"].values():
        if rec["status"] not in DONE or tasks.get(rec["task"], {}).get("exit_of"):
            rec["status"] = PENDING
            rec["attempts"] = 0
            rec.pop("retry_at", None)
    state["status"] = RUNNING
