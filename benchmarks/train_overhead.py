"""Training overhead: raymlp (2 workers on Ray Train) against plain torch.distributed (2 Gloo processes).

Run: python benchmarks/train_overhead.py [--repeats 3] [--epochs 8]

Both sides run the *same* training function (:func:`train_loop`: DDP of an MLP on scikit-learn's
digits, one report per epoch with the model's state as checkpoint) in 2 worker processes:

* raymlp: ``raymlp.init()`` first (Ray already up, not timed), then ``TrainJob(...).run()`` as
  users run it, MLflow tracking on (run, params, per-epoch metrics, checkpoints).
* plain: ``torch.multiprocessing.spawn`` of 2 processes, ``init_process_group("gloo")``, DDP,
  rank 0 saving the same checkpoint with ``torch.save``.

Measured, per side, as the median over ``--repeats`` runs (after ``--warmup`` runs not counted):

* end to end: wall time from the call to the result in the calling process;
* steady epoch: the median time of one epoch (train + report) inside the loop, epochs after the
  first, as rank 0 sees it;
* peak RSS: ``ru_maxrss`` of rank 0's worker process at the end of the loop.

The last line is ``RESULT {"steady_ratio": ..., "end_to_end_ratio": ..., "peak_rss_ratio": ...}``
(raymlp over plain; lower is better; targets 1.05, 1.5 and 1.2).

This module imports neither Ray nor raymlp at import time: plain workers are spawned and import
this module, so their memory must not include Ray.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HIDDEN = 256
BATCH = 32


# -- the training function, shared by both sides ---------------------------------------------
def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _digits():
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    # A few copies of the data so that one epoch is long enough to time (~0.3 s on 2 cores).
    reps = int(os.environ.get("RAYMLP_BENCH_DATA_REPEAT", "3"))
    return np.concatenate([x] * reps), np.concatenate([y.astype(np.int64)] * reps)


def train_loop(ctx) -> None:
    """One DDP training run; ``ctx`` is raymlp's TrainContext or :class:`_PlainContext`."""
    import torch

    torch.set_num_threads(1)  # one CPU per worker on both sides
    torch.manual_seed(0)
    x, y = _digits()
    xs, ys = ctx.shard(torch.from_numpy(x), torch.from_numpy(y))
    model = ctx.prepare_model(torch.nn.Sequential(
        torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, HIDDEN),
        torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 10)))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    epoch_s: list[float] = []
    for epoch in ctx.epochs(ctx.config["epochs"]):
        t0 = time.perf_counter()
        perm = torch.randperm(len(xs), generator=torch.Generator().manual_seed(epoch))
        total = 0.0
        for i in range(0, len(perm), BATCH):
            idx = perm[i:i + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(xs[idx]), ys[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        inner = ctx.unwrap(model)
        # epoch_s of the previous epochs ride along: the last report carries all of them.
        ctx.report({"train_loss": total / len(xs), "peak_rss_mb": _peak_rss_mb(),
                    **{f"epoch_s_{i}": s for i, s in enumerate(epoch_s)}},
                   checkpoint={"model": inner.state_dict(), "opt": opt.state_dict()}
                   if ctx.config.get("checkpoint", True) else None)
        epoch_s.append(time.perf_counter() - t0)
    if ctx.config["epochs"] > 0:
        # One last (metrics-only) report so the final epoch's time reaches the result too.
        ctx.report({"peak_rss_mb": _peak_rss_mb(),
                    **{f"epoch_s_{i}": s for i, s in enumerate(epoch_s)}})


# -- plain torch.distributed -------------------------------------------------------------------
class _PlainContext:
    """The subset of raymlp's TrainContext that :func:`train_loop` uses, over torch.distributed."""

    def __init__(self, rank: int, world_size: int, config: dict, out_dir: str):
        self.rank, self.world_size, self.config = rank, world_size, config
        self._out = Path(out_dir)
        self._epoch = 0
        self.last: dict = {}

    def shard(self, *arrays):
        n = len(arrays[0])
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        stop = start + base + (1 if self.rank < extra else 0)
        out = tuple(a[start:stop] for a in arrays)
        return out[0] if len(out) == 1 else out

    def prepare_model(self, model):
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    @staticmethod
    def unwrap(model):
        return model.module

    def epochs(self, total: int):
        for epoch in range(total):
            self._epoch = epoch
            yield epoch

    def report(self, metrics: dict, checkpoint=None) -> None:
        import torch

        self.last = {**metrics, "epoch": self._epoch}
        if checkpoint is not None and self.rank == 0:
            d = self._out / f"checkpoint_{self._epoch:06d}"
            d.mkdir(parents=True, exist_ok=True)
            torch.save(checkpoint, d / "state.pkl")
            (d / "meta.json").write_text(json.dumps({"epoch": self._epoch}))


def _plain_worker(rank: int, world_size: int, port: int, config: dict, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        ctx = _PlainContext(rank, world_size, config, out_dir)
        train_loop(ctx)
        (Path(out_dir) / f"metrics_{rank}.json").write_text(json.dumps(ctx.last))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    from raymlp._util import free_ports

    return free_ports(1)[0]


def run_plain(config: dict, workers: int) -> tuple[float, dict]:
    """(seconds from call to result, rank 0's last metrics)."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="plain-ddp-") as out:
        t0 = time.perf_counter()
        mp.spawn(_plain_worker, args=(workers, _free_port(), config, out), nprocs=workers,
                 join=True)
        metrics = json.loads((Path(out) / "metrics_0.json").read_text())
        return time.perf_counter() - t0, metrics


# -- raymlp ------------------------------------------------------------------------------------
def run_raymlp(config: dict, workers: int) -> tuple[float, dict]:
    """(seconds from call to result, rank 0's last metrics); Ray must be up already."""
    from raymlp import train

    job = train.TrainJob(loop=train_loop, framework="torch", name="bench",
                         scaling=train.Scaling(workers=workers), config=config,
                         checkpointing=train.Checkpointing(every=1, keep=2))
    t0 = time.perf_counter()
    result = job.run()
    elapsed = time.perf_counter() - t0
    return elapsed, dict(result.history[-1]) if result.history else {}


# -- the comparison ----------------------------------------------------------------------------
def _steady(metrics: dict) -> float:
    """Median epoch time after the first epoch."""
    count = sum(1 for k in metrics if k.startswith("epoch_s_"))
    times = [metrics[f"epoch_s_{i}"] for i in range(count)]
    return statistics.median(times[1:] if len(times) > 1 else times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1,
                        help="runs per side before the measured ones (not counted)")
    parser.add_argument("--no-checkpoint", action="store_true",
                        help="report metrics only (no checkpoint state) on both sides")
    parser.add_argument("--only", choices=["plain", "raymlp"], default=None)
    args = parser.parse_args()

    if "RAYMLP_HOME" not in os.environ:
        os.environ["RAYMLP_HOME"] = tempfile.mkdtemp(prefix="raymlp-bench-")
    config = {"epochs": args.epochs, "checkpoint": not args.no_checkpoint}

    import raymlp

    t0 = time.perf_counter()
    raymlp.init()
    print(f"raymlp.init(): {time.perf_counter() - t0:.1f} s (not counted)", flush=True)

    sides = {"plain": run_plain, "raymlp": run_raymlp}
    if args.only:
        sides = {args.only: sides[args.only]}
    runs: dict[str, list[tuple[float, dict]]] = {name: [] for name in sides}
    for i in range(args.warmup + args.repeats):
        for name, fn in sides.items():  # interleaved, so both see the same machine load
            wall, metrics = fn(config, args.workers)
            tag = "warmup" if i < args.warmup else f"run {i - args.warmup + 1}"
            print(f"{name:7s} {tag:7s} end_to_end={wall:6.2f} s  steady_epoch="
                  f"{_steady(metrics):.4f} s  peak_rss={metrics['peak_rss_mb']:.0f} MiB",
                  flush=True)
            if i >= args.warmup:
                runs[name].append((wall, metrics))

    med = {name: {"end_to_end_s": statistics.median(w for w, _ in r),
                  "steady_epoch_s": statistics.median(_steady(m) for _, m in r),
                  "peak_rss_mb": statistics.median(m["peak_rss_mb"] for _, m in r)}
           for name, r in runs.items()}
    for name, m in med.items():
        print(f"{name:7s} median  " + "  ".join(f"{k}={v:.4g}" for k, v in m.items()))
    if len(med) < 2:
        return
    p, r = med["plain"], med["raymlp"]
    import raymlp

    raymlp.shutdown()  # Ray's forwarded worker logs must not come after the RESULT line
    print("RESULT " + json.dumps({
        "steady_ratio": round(r["steady_epoch_s"] / p["steady_epoch_s"], 3),
        "end_to_end_ratio": round(r["end_to_end_s"] / p["end_to_end_s"], 3),
        "peak_rss_ratio": round(r["peak_rss_mb"] / p["peak_rss_mb"], 3),
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
