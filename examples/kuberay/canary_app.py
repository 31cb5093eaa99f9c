"""A Ray Serve application that splits traffic between a stable and a canary model.

Ray Serve routes by application, not by version, so the split is a small router deployment:
each request goes to the canary with probability ``canary_percent / 100``. The two "models" are
trivial scorers here, to keep the example self-contained; ``raymlp.serve`` does the same with
MLflow models. ``build(args)`` is the application builder that ``serveConfigV2`` names.
"""

from __future__ import annotations

import random

from ray import serve


@serve.deployment
class Model:
    def __init__(self, version: str, weight: float):
        self.version, self.weight = version, weight

    def predict(self, inputs: list[float]) -> dict:
        return {"version": self.version, "score": self.weight * sum(inputs)}


@serve.deployment
class Router:
    def __init__(self, stable, canary, canary_percent: float):
        self.stable, self.canary, self.share = stable, canary, canary_percent / 100.0

    async def __call__(self, request) -> dict:
        inputs = (await request.json()).get("inputs", [])
        target = self.canary if random.random() < self.share else self.stable
        return await target.predict.remote(inputs)


def build(args: dict):
    percent = float(args.get("canary_percent", 10))
    if not 0 <= percent <= 100:
        raise ValueError(f"canary_percent must be in [0, 100], got {percent}")
    stable = Model.options(name="stable").bind(args.get("stable", "v1"), 1.0)
    canary = Model.options(name="canary").bind(args.get("canary", "v2"), 1.1)
    return Router.bind(stable, canary, percent)
