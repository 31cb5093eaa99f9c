"""Bad training specs fail before any Ray work, naming the field and the value."""

from __future__ import annotations

import time

import pytest

from raymlp import train
from raymlp.errors import RaymlpError, ResourceError, SpecError


def _loop(ctx):
    ctx.report({"x": 1})


@pytest.mark.parametrize(
    ("build", "field", "shown"),
    [
        (lambda: train.Scaling(workers=0), "Scaling.workers", "workers=0"),
        (lambda: train.Scaling(workers=1.5), "Scaling.workers", "workers=1.5"),
        (lambda: train.Scaling(gpus_per_worker=-1), "Scaling.gpus_per_worker", "-1"),
        (lambda: train.Scaling(placement_strategy="RANDOM"), "Scaling.placement_strategy", "RANDOM"),
        (lambda: train.Scaling(resources_per_worker={"GPU": 1}), "Scaling.resources_per_worker.GPU",
         "gpus_per_worker"),
        (lambda: train.Checkpointing(every=0), "Checkpointing.every", "every=0"),
        (lambda: train.Checkpointing(mode="best"), "Checkpointing.mode", "best"),
        (lambda: train.TrainJob(loop=_loop, framework="mxnet"), "TrainJob.framework", "mxnet"),
        (lambda: train.TrainJob(loop=_loop, backend="mpi"), "TrainJob.backend", "mpi"),
        (lambda: train.TrainJob(loop=_loop, backend="nccl"), "TrainJob.backend", "nccl"),
        (lambda: train.TrainJob(loop=_loop, framework="generic"), "TrainJob.backend", "None"),
        (lambda: train.TrainJob(loop=_loop, max_failures=-5), "TrainJob.max_failures", "-5"),
        (lambda: train.TrainJob(loop=42), "TrainJob.loop", "42"),
        (lambda: train.TrainJob(loop=_loop, flavor="onnx"), "TrainJob.flavor", "onnx"),
    ],
)
def test_bad_spec_names_field_and_value(build, field, shown):
    with pytest.raises(SpecError) as err:
        build()
    assert err.value.field == field
    assert field.split(".")[-1].split("[")[0] in str(err.value)
    assert shown in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, RaymlpError)


def test_unknown_framework_error_lists_the_allowed_ones():
    with pytest.raises(SpecError, match=r"\['torch', 'tensorflow', 'xgboost', 'generic'\]"):
        train.TrainJob(loop=_loop, framework="mxnet")


@pytest.mark.parametrize(
    ("scaling", "field"),
    [
        (train.Scaling(workers=2, gpus_per_worker=1), "Scaling.gpus_per_worker"),
        (train.Scaling(workers=1, cpus_per_worker=512), "Scaling.cpus_per_worker"),
        (train.Scaling(workers=64), "Scaling.workers"),
        (train.Scaling(workers=1, resources_per_worker={"TPU": 4}),
         "Scaling.resources_per_worker['TPU']"),
    ],
)
def test_resources_the_cluster_can_never_provide_fail_within_seconds(ray_session, scaling, field):
    job = train.TrainJob(loop=_loop, scaling=scaling, name="too-big")
    started = time.monotonic()
    with pytest.raises(ResourceError) as err:
        job.run()
    assert time.monotonic() - started < 10
    assert err.value.field == field
    assert "cannot" in str(err.value)
