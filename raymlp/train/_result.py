"""What a finished training job left behind: :class:`TrainResult`."""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Mapping
from typing import Any

from raymlp.errors import JobError


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished job left behind.

    Attributes:
        metrics: the last epoch's metrics (rank 0).
        history: per-epoch metrics, oldest first.
        checkpoint: the latest checkpoint (a ``ray.train.Checkpoint``), or None.
        best_checkpoint: the best by ``Checkpointing.score``, else the latest.
        checkpoints: every checkpoint kept.
        run_id: the job's MLflow run.
        model_uri: the logged model's URI, ``models:/<model_id>`` (an MLflow LoggedModel whose
            source run is ``run_id``; ``runs:/<run_id>/model`` loads it too), or None when the
            loop logged no model.
        path: the job's storage folder.
        duration_s: wall time of the training itself.
        flavor: the model's flavor (raymlp's name: ``"torch"``, ``"xgboost"``, ...).

    Example:
        >>> result = job.run()
        >>> result.metrics["val_accuracy"], result.model_uri
        >>> result.register("digits", alias="champion")
    """

    metrics: dict
    history: list
    checkpoint: Any
    best_checkpoint: Any
    checkpoints: list
    run_id: str
    model_uri: str | None
    path: str
    duration_s: float
    flavor: str

    def register(self, name: str, alias: str | None = None, *,
                 tags: Mapping[str, Any] | None = None):
        """Register the model as a new version of ``name`` (and point ``alias`` at it).

        The version carries lineage tags: the source run and the training data's digest.

        Returns:
            ModelVersion: the new version; ``models:/name@alias`` loads it.

        Raises:
            JobError: the loop logged no model.
        """
        from raymlp import tracking

        if not self.model_uri:
            raise JobError("this job logged no model: call ctx.log_model(model, input_example) "
                           "at the end of the training loop", run_id=self.run_id)
        return tracking.register_model(self.model_uri, name, alias=alias, tags=tags)

    def load_model(self, flavor: str | None = None):
        """Load the logged model, natively (default) or as ``"pyfunc"``."""
        from raymlp import tracking

        if not self.model_uri:
            raise JobError("this job logged no model", run_id=self.run_id)
        return tracking.load_model(self.model_uri, flavor=flavor or self.flavor)

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = "".join(f"<tr><td>{esc(str(k))}</td><td>{esc(_fmt(v))}</td></tr>"
                       for k, v in self.metrics.items())
        return (f"<b>TrainResult</b> run <code>{esc(self.run_id)}</code>, {len(self.history)} "
                f"epochs in {self.duration_s:.1f} s, model <code>{esc(str(self.model_uri))}</code>"
                f"<table>{rows}</table>")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
