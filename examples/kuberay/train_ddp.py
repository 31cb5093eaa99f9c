"""Data-parallel PyTorch training on Ray Train: the entrypoint of the seed RayJob.

It stands in for the seed Kubeflow PyTorchJob (1 master + 3 workers, 4 GPUs each): on the
KubeRay cluster of ``seed_pytorchjob.py`` it starts ``--workers 16`` Ray Train workers, one
per GPU, that train an MLP with DistributedDataParallel over NCCL. Locally, on a CPU::

    python examples/kuberay/train_ddp.py --workers 2 --gpus-per-worker 0 --backend gloo --epochs 2
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=16, help="Ray Train workers (one per GPU)")
    parser.add_argument("--gpus-per-worker", type=float, default=1.0)
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
    return parser


def train_loop(config: dict) -> None:
    import torch
    from torch import nn

    import ray.train
    import ray.train.torch

    # Synthetic 8x8 "digits": a fixed random linear teacher labels the inputs, so the loss
    # has somewhere to go without downloading a data set.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(config["samples"], 64, generator=gen)
    y = (x @ torch.randn(64, 10, generator=gen)).argmax(dim=1)
    shard = ray.train.get_context().get_world_rank()
    world = ray.train.get_context().get_world_size()
    x, y = x[shard::world], y[shard::world]
    model = ray.train.torch.prepare_model(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)))
    device = ray.train.torch.get_device()
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(config["epochs"]):
        total = 0.0
        for i in range(0, len(x), config["batch_size"]):
            xb, yb = x[i : i + config["batch_size"]].to(device), y[i : i + config["batch_size"]].to(device)
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
        ray.train.report({"epoch": epoch, "loss": total / len(x)})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    backend = args.backend or ("nccl" if args.gpus_per_worker > 0 else "gloo")

    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = args.gpus_per_worker > 0
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={k: getattr(args, k) for k in ("epochs", "lr", "batch_size", "samples")},
        scaling_config=ScalingConfig(
            num_workers=args.workers,
            use_gpu=use_gpu,
            resources_per_worker={"GPU": args.gpus_per_worker} if use_gpu else None,
        ),
        torch_config=TorchConfig(backend=backend),
    )
    result = trainer.fit()
    print(f"final metrics: {result.metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
