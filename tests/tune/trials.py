"""Trial functions the tune tests run (importable by reference: a subprocess driver and the
experiment-file tests name them as ``tests.tune.trials:<function>``)."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path


def branin(x1: float, x2: float) -> float:
    """The Branin function: global minimum 0.397887 at (-pi, 12.275), (pi, 2.275), (9.425, 2.475)."""
    a, b, c = 1.0, 5.1 / (4 * math.pi ** 2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x2 - b * x1 ** 2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


def branin_trial(ctx) -> None:
    ctx.report({"value": branin(ctx.config["x1"], ctx.config["x2"])})


def quadratic(ctx) -> None:
    """A few steps towards (x - 0.3)^2; ``steps`` from the config."""
    x = ctx.config["x"]
    for step in range(int(ctx.config.get("steps", 2))):
        ctx.report({"loss": (x - 0.3) ** 2 + 0.1 / (step + 1), "aux": step})


def curves(ctx) -> None:
    """Known learning curves: quality q in [0, 1]; loss falls to q (bad trials stay high)."""
    q = ctx.config["q"]
    for step in range(ctx.config["steps"]):
        ctx.report({"loss": q + 1.0 / (step + 1)})


def flaky(ctx) -> None:
    """Raises for x >= the config's ``fail_above``; reports otherwise."""
    if ctx.config["x"] >= ctx.config["fail_above"]:
        raise ValueError(f"bad x={ctx.config['x']}")
    ctx.report({"loss": ctx.config["x"]})


def killed_once(ctx) -> None:
    """The first attempt of the trial with x == kill_x SIGKILLs its own process mid-run."""
    marker = Path(ctx.config["marker_dir"]) / f"{ctx.trial_id}.started"
    ctx.report({"loss": ctx.config["x"]})
    if ctx.config["x"] == ctx.config["kill_x"] and not marker.exists():
        marker.write_text("1")
        os.kill(os.getpid(), signal.SIGKILL)
    ctx.report({"loss": ctx.config["x"] / 2})


def slow_quadratic(ctx) -> None:
    """A trial that takes a while (the resume test kills its driver mid-experiment); each
    completed trial appends its params to ``ran.txt`` in ``marker_dir``."""
    x = ctx.config["x"]
    for step in range(2):
        time.sleep(ctx.config["sleep_s"])
        ctx.report({"loss": (x - 0.3) ** 2 + 0.01 * step})
    with open(Path(ctx.config["marker_dir"]) / "ran.txt", "a") as f:
        f.write(f"{x!r}\n")


def sklearn_trial(ctx) -> None:
    """A logistic regression on iris with regularization C; logs the model."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(C=ctx.config["C"], max_iter=200).fit(x, y)
    ctx.report({"accuracy": float(model.score(x, y))})
    ctx.log_model(model, input_example=x[:3], flavor="sklearn")
