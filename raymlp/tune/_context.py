"""What a trial sees: :class:`TrialContext`, and the function Ray Tune runs for each trial."""

from __future__ import annotations

import dataclasses
import pickle
import tempfile
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raymlp._util import upload_dir

# Keys of the results a trial's wrapper adds (the driver reads them; they are not metrics).
ERROR_KEY = "raymlp_error"  # the trial raised: its exception's text
RUN_KEY = "raymlp_run"  # a TrainJob trial's own MLflow run id
STEP_KEY = "raymlp_step"  # the user's report count (1, 2, ...)
MODEL_DIR = "model"  # under the trial's storage folder: the model a trial saved
_STATE_FILE = "state.pkl"


@dataclasses.dataclass
class TrialPayload:
    """What the driver sends to every trial (once, through Ray's object store)."""

    trial: Any  # the user's function, or a TrainJob
    constants: dict
    storage: str  # the experiment's storage folder (local path or fsspec URL)
    parent_run_id: str
    metric: str
    goal: str


class TrialContext:
    """A trial's handle: its sampled config, its reports, its checkpoints and its model.

    Example:
        >>> def trial(ctx):
        ...     state = ctx.restore() or {"w": 0.0}      # PBT hands a better trial's state over
        ...     for step in range(10):
        ...         loss = train_one_step(state, lr=ctx.config["lr"])
        ...         ctx.report({"loss": loss}, checkpoint=state)
    """

    def __init__(self, config: dict, trial_id: str, payload: TrialPayload):
        self._config = config
        self._payload = payload
        self.trial_id = trial_id
        self.step = 0
        self._last: dict[str, Any] = {}

    @property
    def config(self) -> dict:
        """The sampled hyperparameters (nested as in the space) and the space's constants."""
        return self._config

    def report(self, metrics: Mapping[str, Any], *, checkpoint: Any = None) -> None:
        """Report one step's metrics (the scheduler may stop the trial here).

        Args:
            metrics: numeric metrics; the objective's metric among them.
            checkpoint: any picklable state to continue from (population-based training hands
                it to other trials; :meth:`restore` returns it).
        """
        import ray.tune

        clean = {k: v for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.step += 1
        self._last = clean
        clean = {**clean, STEP_KEY: self.step}
        if checkpoint is None:
            ray.tune.report(clean)
            return
        with tempfile.TemporaryDirectory(prefix="raymlp-trial-") as d:
            Path(d, _STATE_FILE).write_bytes(pickle.dumps(checkpoint))
            ray.tune.report(clean, checkpoint=ray.tune.Checkpoint.from_directory(d))

    def restore(self) -> Any:
        """The state of the latest checkpoint handed to this trial (None on a fresh start)."""
        import ray.tune

        ckpt = ray.tune.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            path = Path(d, _STATE_FILE)
            return pickle.loads(path.read_bytes()) if path.exists() else None

    def log_model(self, model: Any, input_example: Any = None, *, flavor: str) -> None:
        """Save the trial's model; the experiment logs it to the trial's MLflow run.

        Args:
            model: the trained model.
            input_example: a batch of inputs (the signature is inferred from it).
            flavor: raymlp's flavor name (``"sklearn"``, ``"torch"``, ...).
        """
        from raymlp import tracking

        with tempfile.TemporaryDirectory(prefix="raymlp-model-") as d:
            path = Path(d) / MODEL_DIR
            tracking.save_model(model, path, flavor=flavor, input_example=input_example)
            upload_dir(path, model_dir(self._payload.storage, self.trial_id))


def model_dir(storage: str, trial_id: str) -> str:
    """Where trial ``trial_id`` saves its model (the driver logs it from there)."""
    return f"{storage}/{trial_id}/{MODEL_DIR}"


def trial_main(config: dict, payload: TrialPayload) -> None:
    """What Ray Tune runs for a trial: the user's function (or TrainJob) with the context.

    An exception from the user's code is reported as the trial's last result (the driver
    records the trial as failed with it) instead of being raised: only a trial whose process
    dies is retried by Ray Tune.
    """
    import ray.tune

    from raymlp import _console, _ray_compat
    from raymlp.tune._space import unflatten

    _console.quiet()
    _ray_compat.fast_trial_results()
    values = unflatten({**payload.constants, **config})
    trial_id = ray.tune.get_context().get_trial_id()
    ctx = TrialContext(values, trial_id, payload)
    try:
        from raymlp.train import TrainJob

        if isinstance(payload.trial, TrainJob):
            _train_job_trial(ctx, payload)
        else:
            payload.trial(ctx)
    except Exception as exc:  # the user's code failed: recorded, not retried
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        # Every result carries the objective's metric (schedulers read it): the last one
        # reported, else the worst value.
        worst = float("inf") if payload.goal == "min" else float("-inf")
        ray.tune.report({payload.metric: worst, **ctx._last, STEP_KEY: ctx.step,
                         ERROR_KEY: text[-2000:]})


def _train_job_trial(ctx: TrialContext, payload: TrialPayload) -> None:
    """Run a TrainJob with the sampled config; each report of its rank 0 is a trial step.

    The job's own MLflow run (nested under the experiment's) is the trial's run: it holds the
    job's params, per-epoch metrics and model.
    """
    import queue
    import threading

    import ray.tune

    from raymlp.train import _job

    job = dataclasses.replace(payload.trial, config={**payload.trial.config, **ctx.config},
                              name=f"{payload.trial.name}-{ctx.trial_id}")
    prepared = _job.prepare(job, parent_run_id=payload.parent_run_id)
    reports: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}
    run_id = prepared.run.run_id

    def train() -> None:
        try:
            ray_result = _job.fit(prepared, on_report=reports.put)
            outcome["result"] = _job.finish(prepared, ray_result)
        except BaseException as exc:  # handed to the trial's thread below
            outcome["error"] = exc
        finally:
            reports.put(None)

    # Ray Tune's report must come from the trial's own thread; the relay calls on_report in its.
    thread = threading.Thread(target=train, name="raymlp-tune-train", daemon=True)
    thread.start()
    while (metrics := reports.get()) is not None:
        ctx.step += 1
        ctx._last = {k: v for k, v in metrics.items() if k != "epoch"}
        ray.tune.report({**metrics, RUN_KEY: run_id, STEP_KEY: ctx.step})
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
