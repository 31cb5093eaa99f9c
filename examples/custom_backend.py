"""Plug your own framework into raymlp through the generic backend hook.

The "framework" here is raw torch.distributed collectives without DDP: the backend does its
rendezvous (environment plus process group) in every worker before the loop runs; the loop
averages gradients itself with all_reduce.

Run: python examples/custom_backend.py
"""

from __future__ import annotations

import os

import raymlp
from raymlp import train


class RawCollectives(train.Backend):
    """Rendezvous for hand-written torch.distributed code."""

    name = "raw-gloo"

    def setup(self, worker: train.WorkerInfo) -> None:
        import torch.distributed as dist

        os.environ["MASTER_ADDR"] = worker.master_addr
        os.environ["MASTER_PORT"] = str(worker.master_port)
        dist.init_process_group("gloo", rank=worker.rank, world_size=worker.world_size)

    def teardown(self, worker: train.WorkerInfo) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def regression_loop(ctx: train.TrainContext) -> None:
    import torch
    import torch.distributed as dist

    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 512).unsqueeze(1)
    y = 2 * x - 1
    xs, ys = ctx.shard(x, y)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    for _ in ctx.epochs(ctx.config["epochs"]):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(xs), ys)
        loss.backward()
        for p in model.parameters():  # the framework's own gradient averaging
            dist.all_reduce(p.grad)
            p.grad /= ctx.world_size
        opt.step()
        ctx.report({"loss": float(loss.detach()), "world_size": dist.get_world_size()})
    ctx.log_model(model, input_example=x[:2].numpy(), flavor="torch")


def main() -> None:
    raymlp.init()
    result = train.TrainJob(loop=regression_loop, framework="generic", backend=RawCollectives(),
                            scaling=train.Scaling(workers=2), config={"epochs": 40},
                            name="custom-backend").run()
    print(f"loss {result.history[0]['loss']:.4f} -> {result.metrics['loss']:.6f}")


if __name__ == "__main__":
    main()
