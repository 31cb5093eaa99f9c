"""Distributed PyTorch training of an MLP on scikit-learn's digits, tracked in MLflow.

Run: python examples/train_digits.py [--workers 2] [--epochs 15]
Uses the embedded default: a local Ray instance and an MLflow store under ./.raymlp.
"""

from __future__ import annotations

import argparse

import raymlp
from raymlp import train


def load_digits_split(seed: int = 0):
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y.astype(np.int64), test_size=0.25, random_state=seed, stratify=y)


def mlp(hidden: int):
    import torch

    return torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, 10))


def digits_loop(ctx: train.TrainContext) -> None:
    """Runs in every worker: DDP over this worker's shard, a checkpoint per epoch."""
    import torch

    cfg = ctx.config
    torch.manual_seed(cfg.get("seed", 0))
    x_train, x_val, y_train, y_val = load_digits_split()
    x_shard, y_shard = ctx.shard(torch.from_numpy(x_train), torch.from_numpy(y_train))
    model = ctx.prepare_model(mlp(cfg["hidden"]))
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    ctx.restore(model=model, optimizer=opt)  # after a restart: the last checkpoint's state
    loss_fn = torch.nn.CrossEntropyLoss()
    xv, yv = torch.from_numpy(x_val), torch.from_numpy(y_val)
    for epoch in ctx.epochs(cfg["epochs"]):
        model.train()
        perm = torch.randperm(len(x_shard), generator=torch.Generator().manual_seed(epoch))
        total = 0.0
        for i in range(0, len(perm), cfg["batch_size"]):
            idx = perm[i:i + cfg["batch_size"]]
            opt.zero_grad()
            loss = loss_fn(model(x_shard[idx]), y_shard[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.no_grad():
            val_acc = float((model(xv).argmax(1) == yv).float().mean())
        ctx.report({"train_loss": total / len(x_shard), "val_accuracy": val_acc},
                   checkpoint={"model": model, "optimizer": opt})
    ctx.log_model(model, input_example=x_val[:5])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--cpus-per-worker", type=float, default=1)
    parser.add_argument("--register", default="digits", help="registered model name")
    args = parser.parse_args()

    raymlp.init()
    job = train.TrainJob(
        loop=digits_loop, framework="torch", name="digits",
        scaling=train.Scaling(workers=args.workers, cpus=args.cpus_per_worker),
        config={"lr": 3e-3, "hidden": 64, "batch_size": 32, "epochs": args.epochs},
        checkpointing=train.Checkpointing(every=1, keep=2, score="val_accuracy", mode="max"),
        max_failures=2,
    )
    result = job.run()  # progress per epoch, then a summary (run id, metrics, model URI)
    version = result.register(args.register, alias="champion")
    print(f"registered models:/{args.register}@champion (version {version.version}), "
          f"val_accuracy={result.metrics['val_accuracy']:.4f}")


if __name__ == "__main__":
    main()
