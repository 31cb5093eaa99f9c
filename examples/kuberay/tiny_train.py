"""A tiny training job for Ray job submission: linear regression by gradient descent.

Each step fans the gradient computation out over Ray tasks (one per data shard) and averages
the results on the driver, the shape of data-parallel training without a framework. Submit it
to any Ray head::

    raymlp submit --address http://127.0.0.1:8265 --working-dir examples/kuberay -- python tiny_train.py

It exits 1 when the loss does not go down, so a broken cluster shows as a FAILED job.
"""

from __future__ import annotations

import argparse
import random
import sys

import ray


@ray.remote(num_cpus=0.25)
def shard_gradient(w: float, b: float, shard: list[tuple[float, float]]) -> tuple[float, float, float]:
    gw = gb = loss = 0.0
    for x, y in shard:
        err = w * x + b - y
        gw, gb, loss = gw + 2 * err * x, gb + 2 * err, loss + err * err
    n = len(shard)
    return gw / n, gb / n, loss / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tiny linear regression on Ray tasks")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args(argv)
    rng = random.Random(0)
    data = [(x, 3.0 * x + 0.5 + rng.gauss(0, 0.01)) for x in (rng.uniform(-1, 1) for _ in range(200))]
    shards = [data[i :: args.shards] for i in range(args.shards)]
    ray.init()
    w = b = 0.0
    first = last = None
    for step in range(args.steps):
        grads = ray.get([shard_gradient.remote(w, b, s) for s in shards])
        gw = sum(g[0] for g in grads) / len(grads)
        gb = sum(g[1] for g in grads) / len(grads)
        last = sum(g[2] for g in grads) / len(grads)
        first = last if first is None else first
        w, b = w - args.lr * gw, b - args.lr * gb
        print(f"step {step} loss {last:.5f}", flush=True)
    print(f"trained w={w:.3f} b={b:.3f} loss {first:.4f} -> {last:.4f}", flush=True)
    return 0 if last < first else 1


if __name__ == "__main__":
    sys.exit(main())
