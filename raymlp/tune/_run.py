"""Running an :class:`~raymlp.tune.Experiment` on Ray Tune, with Optuna proposing the configs.

The driver owns all bookkeeping, off the trials' path:

- a Tune ``Callback`` (:class:`_Tracker`) sees every result: it folds each trial's value,
  decides when the experiment ends (a target reached, too many failures) and hands MLflow
  writes and journal appends to the process's tracking writer (``tracking.writer()``). Only
  that thread writes to MLflow, so parallel trials never contend for a SQLite store ("database
  is locked"), and a trial never waits for MLflow; each trial's run is a
  ``tracking.BufferedRun``, so a short trial costs three store calls, not one per write;
- the journal (:mod:`raymlp.tune._journal`) makes the experiment resumable after a crash.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from raymlp import _config, _console, _spec, tracking
from raymlp.errors import ExperimentError, ResourceError, TrackingError
from raymlp.tune import _journal
from raymlp.tune._context import ERROR_KEY, RUN_KEY, STEP_KEY, TrialPayload, model_dir, trial_main
from raymlp.tune._result import ExperimentResult, Trial, trials_frame
from raymlp.tune._searcher import OptunaSearcher
from raymlp.tune._space import Choice, Float, Int
from raymlp.tune._spec import ALGORITHMS, Experiment

logger = logging.getLogger(__name__)

# Ray Tune settings raymlp applies unless the user set them (measured on a 2-core machine with
# benchmarks/tune_overhead.py: Tune's defaults cost ~3.3 s per trivial trial, these ~0.1 s).
_TUNE_ENV = {
    # Tune's default loggers (JSON, CSV, TensorBoard) write every result of every trial to
    # disk; raymlp records trials in MLflow and its journal instead.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # The experiment-state snapshot (a pickle of every trial) is what Tune's restore reads;
    # raymlp resumes from its journal, so the snapshot is rarely needed.
    "TUNE_GLOBAL_CHECKPOINT_S": "3600",
    # Results without the objective's metric (a trial that failed before its first report)
    # are recorded by raymlp, not refused by Tune.
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # Tune's per-trial status table on the console: raymlp shows its own progress.
    "RAY_AIR_NEW_OUTPUT": "0",
}

STATUSES = ("completed", "stopped", "failed")


def run(exp: Experiment, *, resume: bool | None = None,
        timeout_s: float | None = None) -> ExperimentResult:
    """:meth:`Experiment.run`."""
    from raymlp._pickling import check_shippable
    from raymlp._runtime import init

    _spec.number("timeout_s", timeout_s, minimum=0, strict=True, optional=True)
    if resume is not None:
        _spec.boolean("resume", resume)
    check_shippable("Experiment.trial", exp.trial.loop if exp.is_train_job else exp.trial)
    record = _journal.read_record(exp.name)
    if resume and record is None:
        raise _spec.fail("resume", True, f"False or None: there is no experiment "
                                         f"{exp.name!r} to resume (see `raymlp tune list`)")
    if resume is False or (resume is None and record is not None and _ended(exp, record)):
        _journal.reset(exp.name)
        record = None
    init()
    check_parallel(exp)
    for key, value in _TUNE_ENV.items():
        os.environ.setdefault(key, value)

    journal = _journal.Journal(exp.name)
    history = journal.finished()
    pending = journal.pending() if record else []
    cfg = _config.get()
    storage = f"{(exp.storage or cfg.storage_root).rstrip('/')}/tune/{exp.name}"
    parent = _parent_run(exp, record, storage)
    for run_id in journal.started_runs():  # trials cut short by a crash: they rerun
        tracking.Run(run_id).end("KILLED")
    _journal.write_record(exp.name, {
        "name": exp.name, "spec": _to_data(exp), "parent_run_id": parent.run_id,
        "status": "running", "stop_reason": None, "storage": storage,
        "created": (record or {}).get("created", time.time()),
        "resumed": (record or {}).get("resumed", -1) + 1, "max_trials": exp.max_trials})

    remaining = exp.max_trials - len(history)
    tracker = _Tracker(exp, journal, parent.run_id, storage, history)
    if remaining > 0:
        _fit(exp, tracker, storage, history, pending, remaining, timeout_s)
    else:
        tracker.close()
    return _finish(exp, journal, parent, tracker)


def _ended(exp: Experiment, record: dict) -> bool:
    """Whether the experiment on record is over (a new run starts afresh): it failed, or it
    finished every trial asked for now (a larger ``max_trials`` continues it)."""
    if record.get("status") == "failed":
        return True
    return (record.get("status") == "finished"
            and len(_journal.Journal(exp.name).finished()) >= exp.max_trials)


def check_parallel(exp: Experiment) -> None:
    """``parallel_trials`` trials must fit on the cluster at once (Ray would wait forever).

    Raises:
        ResourceError: naming ``Experiment.parallel_trials`` and what fits.
    """
    import ray

    from raymlp.train._job import check_resources

    if exp.is_train_job:
        check_resources(exp.trial)
        need = {k: v * exp.trial.scaling.workers
                for k, v in exp.trial.scaling.per_worker().items()}
    else:
        need = {"CPU": float(exp.cpus), **({"GPU": float(exp.gpus)} if exp.gpus else {})}
    have = ray.cluster_resources()
    asked = {k: v for k, v in need.items() if v > 0}
    fits = min((int(have.get(k, 0.0) / v + 1e-9) for k, v in asked.items()), default=None)
    if fits is not None and exp.parallel_trials > fits:
        raise ResourceError(
            f"Experiment.parallel_trials={exp.parallel_trials} cannot run at once: each trial "
            f"needs {asked} and the Ray cluster holds {fits} such trials",
            field="Experiment.parallel_trials", value=exp.parallel_trials,
            allowed=f"at most {fits}")


def _parent_run(exp: Experiment, record: dict | None, storage: str):
    if record and record.get("parent_run_id"):
        try:
            tracking.get_run(record["parent_run_id"])
        except TrackingError:  # the store was reset since: a new parent run
            logger.info("raymlp: parent run %s is gone; starting a new one",
                        record["parent_run_id"])
        else:
            return tracking.Run(record["parent_run_id"])
    o = exp.objective
    params = {"algorithm": exp.algorithm, "max_trials": exp.max_trials,
              "parallel_trials": exp.parallel_trials, "objective": o.metric, "goal": o.goal,
              "strategy": o.strategy, "seed": exp.seed,
              **{f"space.{k}": repr(v) for k, v in exp.domains.items()}}
    if o.target is not None:
        params["target"] = o.target
    if exp.early_stopping is not None:
        params["early_stopping"] = exp.early_stopping.algorithm
    tags = {**dict(exp.tags), tracking.TAG_KIND: "tune", "raymlp.tune.experiment": exp.name,
            "raymlp.storage": storage}
    if exp.data_hash:
        tags[tracking.TAG_DATA_HASH] = exp.data_hash
    return tracking.start_run(exp.name, experiment=exp.experiment, params=params, tags=tags)


def _to_data(exp: Experiment) -> dict[str, Any] | None:
    """The spec as an experiment file's data (None when the trial has no importable name)."""
    from raymlp.tune._file import to_file_data

    try:
        return to_file_data(exp)
    except (TypeError, ValueError):
        return None


# --- Ray Tune -------------------------------------------------------------------------------------

def _fit(exp: Experiment, tracker: _Tracker, storage: str, history: list, pending: list,
         remaining: int, timeout_s: float | None) -> None:
    import ray.tune

    from raymlp._util import ray_storage

    sampler, scheduler_kind = ALGORITHMS[exp.algorithm]
    settings = dict(exp.algorithm_settings)
    o = exp.objective
    payload = TrialPayload(trial=exp.trial, constants=exp.constants, storage=storage,
                           parent_run_id=tracker.parent_run_id, metric=o.metric, goal=o.goal)
    if exp.is_train_job:
        # The trial only drives its TrainJob, whose workers hold the resources. Ray Tune wants
        # some resource per trial: one byte of Ray's logical memory, so no CPU is taken from
        # the workers (2 workers of 1 CPU fit a 2-CPU machine).
        resources = {"CPU": 0, "memory": 1}
    else:
        resources = {"CPU": exp.cpus, **({"GPU": exp.gpus} if exp.gpus else {})}
    trainable = ray.tune.with_resources(ray.tune.with_parameters(trial_main, payload=payload),
                                        resources)
    param_space: dict[str, Any] = {}
    if scheduler_kind == "pbt":
        # Population-based training picks and mutates configs itself (Tune allows no searcher
        # next to it); its population is seeded from the space.
        search_alg = ray.tune.search.BasicVariantGenerator(random_state=exp.seed)
        param_space = {k: _tune_domain(d) for k, d in exp.domains.items()}
    else:
        search_alg = OptunaSearcher(exp.domains, o, sampler=sampler, seed=exp.seed,
                                    history=history, pending=pending, settings=settings)
        tracker.searcher = search_alg
    scheduler = _scheduler(exp, scheduler_kind, settings)
    tracker.max_t = _max_t(exp, scheduler_kind, settings)
    budget = [b for b in (exp.time_budget_s, timeout_s) if b is not None]
    storage_path, filesystem = ray_storage(storage)
    tuner = ray.tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=ray.tune.TuneConfig(
            metric=o.metric, mode=o.goal, search_alg=search_alg,
            scheduler=scheduler, num_samples=remaining,
            max_concurrent_trials=exp.parallel_trials,
            time_budget_s=min(budget) if budget else None,
            # A reused actor skips a process start per trial; a TrainJob trial's actor owns
            # its Ray Train controller and goes with it.
            reuse_actors=not exp.is_train_job),
        run_config=ray.tune.RunConfig(
            name=f"run-{int(time.time())}", storage_path=storage_path,
            storage_filesystem=filesystem, verbose=0, callbacks=[tracker],
            stop=_Stop(tracker),
            failure_config=ray.tune.FailureConfig(max_failures=exp.max_retries),
            # Population-based training copies other trials' checkpoints: it keeps more.
            checkpoint_config=ray.tune.CheckpointConfig(
                num_to_keep=4 if scheduler_kind == "pbt" else 2)),
    )
    started = time.monotonic()
    with _console.progress(f"tuning {exp.name}", total=exp.max_trials, unit="trial") as bar:
        tracker.bar = bar
        bar.update(len(history))
        bar.note(f"MLflow parent run {tracker.parent_run_id}")
        try:
            tuner.fit()
            # Trials still running when the experiment ended (a target reached, a budget
            # spent) get no completion callback from Ray Tune: they ended here.
            tracker.end_open()
        finally:
            tracker.close()
    if tracker.stop_reason is None and budget and time.monotonic() - started >= min(budget) * 0.99:
        tracker.stop_reason = f"time budget of {min(budget):g} s spent"


def _tune_domain(d):
    import ray.tune

    if isinstance(d, Choice):
        return ray.tune.choice(list(d.values))
    if isinstance(d, Int):
        return (ray.tune.lograndint(d.low, d.high + 1) if d.log
                else ray.tune.qrandint(d.low, d.high, d.step))
    if isinstance(d, Float) and d.step:
        return ray.tune.quniform(d.low, d.high, d.step)
    return ray.tune.loguniform(d.low, d.high) if d.log else ray.tune.uniform(d.low, d.high)


def _scheduler(exp: Experiment, kind: str | None, settings: dict):
    from ray.tune import schedulers

    es = exp.early_stopping
    if es is not None:
        if es.algorithm == "median":
            # Katib's median stopping rule: stop a trial at a step where its best value is
            # worse than the median of the other trials' running averages at that step.
            return schedulers.MedianStoppingRule(
                time_attr="training_iteration", grace_period=es.start_step,
                min_samples_required=es.min_trials_required)
        kind = es.algorithm
        # Two brackets: every trial is judged by start_step * reduction_factor at the latest.
        settings = {"max_t": es.max_t, "reduction_factor": es.reduction_factor,
                    "grace_period": es.start_step, "brackets": 2}
    # A trial that reports max_t steps finishes on its own (its code after the last report,
    # e.g. ctx.log_model, still runs): the scheduler's own bound is one step further.
    if kind == "asha":
        return schedulers.ASHAScheduler(
            time_attr="training_iteration", max_t=settings.get("max_t", 100) + 1,
            grace_period=settings.get("grace_period", 1),
            reduction_factor=settings.get("reduction_factor", 3))
    if kind == "hyperband":
        # Asynchronous HyperBand (ASHA over several brackets): trials are stopped, never paused,
        # so a trial needs no checkpoints to be judged.
        return schedulers.ASHAScheduler(
            time_attr="training_iteration", max_t=settings.get("max_t", 100) + 1,
            grace_period=settings.get("grace_period", 1),
            reduction_factor=settings.get("reduction_factor", 3),
            brackets=settings.get("brackets", 3))
    if kind == "pbt":
        return schedulers.PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=settings.get("perturbation_interval", 2),
            quantile_fraction=settings.get("quantile_fraction", 0.25),
            resample_probability=settings.get("resample_probability", 0.25),
            hyperparam_mutations={k: _tune_domain(d) for k, d in exp.domains.items()})
    return None


def _stopper_base():
    from ray.tune.stopper import Stopper

    return Stopper


def _max_t(exp: Experiment, kind: str | None, settings: dict) -> int | None:
    """The most steps the successive-halving scheduler lets a trial run (None: no bound)."""
    es = exp.early_stopping
    if es is not None:
        return es.max_t if es.algorithm != "median" else None
    return settings.get("max_t", 100) if kind in ("asha", "hyperband") else None


class _Stop(_stopper_base()):
    """Ray Tune's stopper: ends every trial once the tracker has a reason to stop."""
    def __init__(self, tracker: _Tracker):
        self.tracker = tracker

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.tracker.stop_reason is not None


# --- the driver's bookkeeping -------------------------------------------------------------------

def _tune_base():
    from ray.tune import Callback

    return Callback


class _TrialState:
    def __init__(self, number: int, params: dict):
        self.number = number
        self.params = params
        self.value: float | None = None
        self.metrics: dict[str, float] = {}
        self.steps = 0
        self.error: str | None = None
        self.run = None  # raymlp.tracking.BufferedRun (written by the tracking writer)
        self.run_id: str | None = None  # a TrainJob trial's own run
        self.started = time.time()
        self.retries = 0
        self.stopped = False  # a scheduler or the experiment's end stopped it
        self.trial = None  # Ray Tune's Trial


class _Tracker(_tune_base()):
    """Ray Tune callback in the driver: values, stop decisions, MLflow and the journal."""
    def __init__(self, exp: Experiment, journal: _journal.Journal, parent_run_id: str,
                 storage: str, history: list):
        self.exp = exp
        self.journal = journal
        self.parent_run_id = parent_run_id
        self.storage = storage
        self.objective = exp.objective
        self.stop_reason: str | None = None
        self.searcher: OptunaSearcher | None = None
        self.max_t: int | None = None  # the scheduler's most steps per trial
        self.bar = None
        self.trials: dict[str, _TrialState] = {}
        self.number = len(history)
        self.failures = [h for h in history if h.get("status") == "failed"]
        self.done = len(history)
        self.best: float | None = None
        for h in history:
            if h.get("status") != "failed" and h.get("value") is not None and \
                    self.objective.better(h["value"], self.best):
                self.best = h["value"]
        self._experiment_id: str | None = None

    def __getstate__(self) -> dict:
        # Ray Tune pickles its callbacks into its own experiment state (read by its restore,
        # which raymlp does not use): progress, journal, searcher and live trials stay here.
        return {k: v for k, v in self.__dict__.items()
                if k not in ("bar", "journal", "searcher", "trials")}

    # Ray Tune's hooks ----------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        known = self.trials.get(trial.trial_id)
        if known is not None:
            # Ray Tune restarts a trial whose process died (FailureConfig): the same trial,
            # counted once, from its first step again unless it had a checkpoint.
            known.retries += 1
            self._note(f"trial {known.number} lost its process: retried")
            return
        params = {k: v for k, v in trial.config.items() if k in self.exp.domains}
        state = _TrialState(self.number, params)
        state.trial = trial
        self.number += 1
        self.trials[trial.trial_id] = state
        tid = trial.trial_id
        tracking.writer().submit(self.journal.append, "start", trial_id=tid, params=params)
        if not self.exp.is_train_job:
            state.run = self._trial_run(tid, state)
            state.run.flush_soon()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        state = self.trials.get(trial.trial_id)
        if state is None:
            return
        if ERROR_KEY in result:
            state.error = str(result[ERROR_KEY])
            return
        state.steps = int(result.get(STEP_KEY, state.steps + 1))
        if result.get("done"):
            # Ray Tune marks the result on which a scheduler or the stopper ends a trial; a
            # trial that returns is done without this. Reaching max_t is finishing, not stopping.
            state.stopped = self.max_t is None or state.steps < self.max_t
        if state.run_id is None and RUN_KEY in result:
            state.run_id = str(result[RUN_KEY])
            rid = state.run_id
            tracking.writer().submit(self.journal.append, "run", trial_id=trial.trial_id,
                                     run_id=rid)
        metrics = {k: float(v) for k, v in result.items() if self._is_metric(k, v)}
        value = metrics.get(self.objective.metric)
        if value is not None:
            state.value = self.objective.fold(state.value, value)
            if self.objective.reached(value) and self.stop_reason is None:
                self.stop_reason = (f"target {self.objective.metric}"
                                    f"{'<=' if self.objective.goal == 'min' else '>='}"
                                    f"{self.objective.target:g} reached by trial {state.number}")
                self._note(self.stop_reason)
        state.metrics.update(metrics)
        if state.run is not None:  # a TrainJob's relay logs its own metrics
            state.run.log_metrics(metrics, step=state.steps)
            state.run.flush_soon()  # live in MLflow within a second; a short trial's
            # steps and end share one batch

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        state = self.trials.pop(trial.trial_id, None)
        if state is None:
            return
        status = "failed" if state.error is not None else (
            "stopped" if state.stopped else "completed")
        self._end(trial, state, status)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        state = self.trials.pop(trial.trial_id, None)
        if state is None:
            return
        error = getattr(trial, "error_file", None)
        state.error = _error_text(trial) or f"the trial's process failed ({error})"
        self._end(trial, state, "failed")

    # ----------------------------------------------------------------------------------------
    @staticmethod
    def _is_metric(key: str, value: Any) -> bool:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and not key.startswith("raymlp_") and key not in _TUNE_KEYS)

    def _trial_run(self, tid: str, state: _TrialState):
        """The trial's nested MLflow run, buffered: its writes coalesce in the writer."""
        if self._experiment_id is None:
            self._experiment_id = tracking.get_run(self.parent_run_id).info.experiment_id
        tags = {tracking.TAG_KIND: "tune-trial", "raymlp.tune.trial_id": tid,
                "raymlp.tune.experiment": self.exp.name}
        if self.exp.data_hash:
            tags[tracking.TAG_DATA_HASH] = self.exp.data_hash
        return tracking.BufferedRun(
            f"{self.exp.name}-{state.number}", experiment_id=self._experiment_id,
            parent_run_id=self.parent_run_id, params={**state.params, **self.exp.constants},
            tags=tags, on_create=lambda run_id: self.journal.append("run", trial_id=tid,
                                                                    run_id=run_id))

    def _end(self, trial, state: _TrialState, status: str) -> None:
        self.done += 1
        if status != "failed" and state.value is not None and \
                self.objective.better(state.value, self.best):
            self.best = state.value
        ckpt = getattr(trial, "checkpoint", None)
        record = {"trial_id": trial.trial_id, "number": state.number, "params": state.params,
                  "status": status, "value": state.value, "metrics": state.metrics,
                  "steps": state.steps, "error": state.error, "retries": state.retries,
                  "duration_s": time.time() - state.started,
                  "checkpoint": getattr(ckpt, "path", None)}
        if status == "failed":
            self.failures.append(record)
            limit = self.exp.max_failed_trials
            if limit is not None and len(self.failures) > limit and self.stop_reason is None:
                self.stop_reason = (f"{len(self.failures)} trials failed, more than "
                                    f"max_failed_trials={limit}")
        if self.bar is not None:
            self.bar.update(1, best=self.best, running=len(self.trials),
                            failed=len(self.failures))
        state.trial = None  # the writer gets no Ray Tune object (its handles are Ray's)
        tracking.writer().submit(self._record_end, state, record)

    def _record_end(self, state: _TrialState, record: dict) -> None:
        """In the writer thread: finish the trial's MLflow run, then journal the trial."""
        try:
            if state.run is not None:
                run = state.run
                tags = {"raymlp.tune.status": record["status"],
                        "raymlp.tune.steps": record["steps"]}
                if record["error"]:
                    tags["raymlp.tune.error"] = record["error"]
                run.set_tags(tags)
                run.log_metrics({"raymlp.duration_s": record["duration_s"]})
                record["run_id"] = run.flush()
                record["model_uri"] = self._log_model(tracking.Run(run.run_id),
                                                      record["trial_id"])
                run.end("FAILED" if record["status"] == "failed" else
                        "KILLED" if record["status"] == "stopped" else "FINISHED")
                run.flush()
            elif state.run_id is not None:  # a TrainJob trial: its job ended the run
                record["run_id"] = state.run_id
                run = tracking.get_run(state.run_id)
                record["model_uri"] = run.data.tags.get(tracking.TAG_MODEL_URI) or None
                job_run = tracking.Run(state.run_id)
                job_run.set_tags({"raymlp.tune.status": record["status"],
                                  "raymlp.tune.trial_id": record["trial_id"]})
                if run.info.status == "RUNNING":  # stopped early: its process was ended
                    job_run.end("KILLED")
        finally:
            self.journal.append("end", **record)

    def _log_model(self, run, trial_id: str) -> str | None:
        import tempfile
        from pathlib import Path

        import fsspec

        from raymlp._util import download_dir

        src = model_dir(self.storage, trial_id)
        fs, path = fsspec.core.url_to_fs(src)
        if not fs.exists(path):
            return None
        with tempfile.TemporaryDirectory(prefix="raymlp-model-") as d:
            local = download_dir(src, Path(d) / "model")
            return run.log_model_dir(local, name="model")

    def end_open(self) -> None:
        """Record the trials that were still running as stopped."""
        for tid in list(self.trials):
            state = self.trials.pop(tid)
            self._end(state.trial, state, "failed" if state.error else "stopped")

    def _note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.note(text)

    def close(self) -> None:
        """Wait until every record of the experiment is written."""
        tracking.writer().flush()


# Keys Ray Tune adds to every result (not the trial's metrics).
_TUNE_KEYS = {"training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "pid",
              "time_since_restore", "iterations_since_restore", "done", "date", "hostname",
              "node_ip", "trial_id", "experiment_tag", "epoch", "checkpoint_dir_name",
              "should_checkpoint"}


def _error_text(trial) -> str | None:
    path = getattr(trial, "error_file", None)
    if not path:
        return None
    try:
        with open(path) as f:
            lines = [ln for ln in f.read().strip().splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1][:2000] if lines else None


# --- the end ------------------------------------------------------------------------------------

def _finish(exp: Experiment, journal: _journal.Journal, parent, tracker: _Tracker
            ) -> ExperimentResult:

    finished = journal.finished()
    trials = [Trial.from_record(r, exp.objective.metric, exp.name) for r in finished]
    best = _best(exp, trials)
    failed = [t for t in trials if t.status == "failed"]
    limit = exp.max_failed_trials
    too_many = limit is not None and len(failed) > limit
    reason = tracker.stop_reason or (
        f"max_trials={exp.max_trials} trials finished" if len(trials) >= exp.max_trials
        else "stopped before max_trials")
    tags = {"raymlp.stop_reason": reason, "raymlp.tune.trials": len(trials),
            "raymlp.tune.failed": len(failed)}
    if best is not None:
        tags["raymlp.tune.best_run_id"] = best.run_id or ""
        tags["raymlp.tune.best_trial"] = best.trial_id
        parent.log_metrics({f"best.{k}": v for k, v in best.metrics.items()})
        before = (_journal.read_record(exp.name) or {}).get("best_run_id")
        if before and before != best.run_id:  # a resumed experiment found a better trial
            tracking.Run(before).set_tags({"raymlp.tune.best": "false"})
        if best.run_id:
            tracking.Run(best.run_id).set_tags({"raymlp.tune.best": "true"})
    parent.set_tags(tags)
    parent.end("FAILED" if too_many else "FINISHED")
    _journal.update_record(exp.name, status="failed" if too_many else "finished",
                           stop_reason=reason, best_trial=best.trial_id if best else None,
                           best_run_id=best.run_id if best else None,
                           trials=len(trials), failed=len(failed))
    result = ExperimentResult(name=exp.name, best=best, trials=trials_frame(trials),
                              stop_reason=reason, run_id=parent.run_id,
                              objective=exp.objective, all_trials=trials,
                              experiment=exp.name, searcher_trials=(
                                  tracker.searcher.learned if tracker.searcher else None))
    if too_many:
        listed = "; ".join(f"trial {t.number} {t.params}: {t.error}" for t in failed)
        raise ExperimentError(
            f"experiment {exp.name!r} failed: {len(failed)} trials failed, more than "
            f"max_failed_trials={limit}: {listed}", run_id=parent.run_id,
            failures=[{"trial_id": t.trial_id, "params": t.params, "error": t.error,
                       "run_id": t.run_id} for t in failed])
    _console.summary(f"tuning {exp.name} finished", result.summary_fields())
    return result


def _best(exp: Experiment, trials: list[Trial]) -> Trial | None:
    best = None
    for t in trials:
        if t.status != "failed" and t.value is not None and \
                exp.objective.better(t.value, best.value if best else None):
            best = t
    return best
