"""GPU paths: NCCL is chosen and the model sits on the worker's GPU. Run with `-m gpu`."""

from __future__ import annotations

from pathlib import Path

import pytest

from raymlp import train

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def _device_loop(ctx):
    import torch
    import torch.distributed as dist

    model = ctx.prepare_model(torch.nn.Linear(4, 2))
    param = next(model.parameters())
    Path(ctx.config["out"], f"rank{ctx.rank}.txt").write_text(
        f"{dist.get_backend()} {param.device.type} {torch.cuda.current_device()}")
    ctx.report({"ok": 1})


def test_gpu_workers_use_nccl_and_put_the_model_on_their_device(ray_session, tmp_path):
    import torch

    workers = min(2, torch.cuda.device_count())
    job = train.TrainJob(loop=_device_loop, scaling=train.Scaling(workers=workers, gpus=1),
                         config={"out": str(tmp_path)}, name="gpu")
    assert job.resolved_backend == "nccl"
    job.run()
    for rank in range(workers):
        backend, device, _ = (tmp_path / f"rank{rank}.txt").read_text().split()
        assert (backend, device) == ("nccl", "cuda")
