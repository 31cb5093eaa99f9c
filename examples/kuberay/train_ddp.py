"""Data-parallel PyTorch training with raymlp.train: the entrypoint of the seed RayJob.

It stands in for the seed Kubeflow PyTorchJob (1 master + 3 workers, 4 GPUs each): on the
KubeRay cluster of ``seed_pytorchjob.py`` it starts ``--workers 16`` raymlp training workers,
one per GPU, that train an MLP with DistributedDataParallel over NCCL. Locally, on a CPU::

    python examples/kuberay/train_ddp.py --workers 2 --gpus-per-worker 0 --backend gloo --epochs 2
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=16, help="training workers (one per GPU)")
    parser.add_argument("--gpus-per-worker", type=float, default=1.0)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument(
        "--backend",
        choices=["nccl", "gloo"],
        default=None,
        help="torch.distributed backend (default: nccl with GPUs, gloo without)",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4096, help="synthetic training samples")
    parser.add_argument("--placement", choices=["PACK", "SPREAD"], default="PACK",
                        help="PACK workers onto few nodes, or SPREAD them over the nodes")
    return parser


def train_loop(ctx) -> None:
    import torch
    from torch import nn

    cfg = ctx.config
    # Synthetic 8x8 "digits": a fixed random linear teacher labels the inputs, so the loss
    # has somewhere to go without downloading a data set.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(cfg["samples"], 64, generator=gen)
    y = (x @ torch.randn(64, 10, generator=gen)).argmax(dim=1)
    x, y = ctx.shard(x, y)
    model = ctx.prepare_model(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)))
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    ctx.restore(model=model, optimizer=opt)  # after a restart: the last checkpoint's state
    loss_fn = nn.CrossEntropyLoss()
    for _ in ctx.epochs(cfg["epochs"]):
        total = 0.0
        for i in range(0, len(x), cfg["batch_size"]):
            xb = x[i:i + cfg["batch_size"]].to(ctx.device)
            yb = y[i:i + cfg["batch_size"]].to(ctx.device)
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
        ctx.report({"loss": total / len(x)}, checkpoint={"model": model, "optimizer": opt})
    ctx.log_model(model, input_example=x[:4].numpy())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    import raymlp
    from raymlp import train

    raymlp.init()
    result = train.TrainJob(
        loop=train_loop, framework="torch", name="seed-pytorchjob", backend=args.backend,
        scaling=train.Scaling(workers=args.workers, gpus=args.gpus_per_worker,
                              cpus=args.cpus_per_worker, placement_strategy=args.placement),
        config={k: getattr(args, k) for k in ("epochs", "lr", "batch_size", "samples")},
        max_failures=3,
    ).run()
    print(f"final loss {result.metrics['loss']:.4f} after {len(result.history)} epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
