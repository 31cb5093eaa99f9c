"""Bad training specs fail before any Ray work, naming the field and the value."""

from __future__ import annotations

import dataclasses
import math
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
        (lambda: train.Scaling(workers=2.0), "Scaling.workers", "workers=2.0"),
        (lambda: train.Scaling(workers=True), "Scaling.workers", "workers=True"),
        (lambda: train.Scaling(gpus=-1), "Scaling.gpus", "-1"),
        (lambda: train.Scaling(cpus=math.nan), "Scaling.cpus", "nan"),
        (lambda: train.Scaling(cpus=math.inf), "Scaling.cpus", "inf"),
        (lambda: train.Scaling(placement_strategy="RANDOM"), "Scaling.placement_strategy",
         "RANDOM"),
        (lambda: train.Scaling(resources={"GPU": 1}), "Scaling.resources['GPU']", "Scaling.gpus"),
        (lambda: train.Scaling(resources={"TPU": -1}), "Scaling.resources['TPU']", "-1"),
        (lambda: train.Checkpointing(every=0), "Checkpointing.every", "every=0"),
        (lambda: train.Checkpointing(mode="best"), "Checkpointing.mode", "best"),
        (lambda: train.TrainJob(loop=_loop, framework="mxnet"), "TrainJob.framework", "mxnet"),
        (lambda: train.TrainJob(loop=_loop, backend="mpi"), "TrainJob.backend", "mpi"),
        (lambda: train.TrainJob(loop=_loop, backend="nccl"), "TrainJob.backend", "nccl"),
        (lambda: train.TrainJob(loop=_loop, framework="generic"), "TrainJob.backend", "None"),
        (lambda: train.TrainJob(loop=_loop, max_failures=-5), "TrainJob.max_failures", "-5"),
        (lambda: train.TrainJob(loop=42), "TrainJob.loop", "42"),
        (lambda: train.TrainJob(loop=_loop, flavor="onnx"), "TrainJob.flavor", "onnx"),
        (lambda: train.TrainJob(loop=_loop, data_name=""), "TrainJob.data_name", "''"),
        (lambda: train.TrainJob(loop=_loop, wait_for_resources=1), "TrainJob.wait_for_resources",
         "1"),
    ],
)
def test_bad_spec_names_field_and_value(build, field, shown):
    with pytest.raises(SpecError) as err:
        build()
    assert err.value.field == field
    assert field.split(".")[-1].split("[")[0] in str(err.value)
    assert shown in str(err.value)
    assert err.value.allowed
    assert isinstance(err.value, ValueError) and isinstance(err.value, RaymlpError)


def test_unknown_framework_error_lists_the_allowed_ones():
    with pytest.raises(SpecError, match=r"\['torch', 'tensorflow', 'xgboost', 'generic'\]"):
        train.TrainJob(loop=_loop, framework="mxnet")


def test_a_spec_is_built_compared_and_changed_without_a_runtime():
    job = train.TrainJob(loop=_loop, scaling=train.Scaling(workers=3, gpus=0.5), name="a",
                         data_hash="abc", data_source="s3://bucket/digits.parquet")
    assert job == train.TrainJob(loop=_loop, scaling=train.Scaling(workers=3, gpus=0.5),
                                 name="a", data_hash="abc",
                                 data_source="s3://bucket/digits.parquet")
    assert job.resolved_backend == "nccl"
    assert job.data_name == "train"
    assert dataclasses.replace(job, name="b").name == "b"
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.name = "c"


def _gpus_beyond_the_cluster() -> train.Scaling:
    """One worker asking for one GPU more than the whole Ray cluster has (0 on a CPU host)."""
    import ray

    return train.Scaling(workers=1, gpus=ray.cluster_resources().get("GPU", 0) + 1)


@pytest.mark.parametrize(
    ("scaling", "field"),
    [
        (_gpus_beyond_the_cluster, "Scaling.gpus"),
        (lambda: train.Scaling(workers=1, cpus=512), "Scaling.cpus"),
        (lambda: train.Scaling(workers=64), "Scaling.workers"),
        (lambda: train.Scaling(workers=1, resources={"TPU": 4}), "Scaling.resources['TPU']"),
    ],
)
def test_resources_the_cluster_can_never_provide_fail_within_seconds(ray_session, scaling, field):
    job = train.TrainJob(loop=_loop, scaling=scaling(), name="too-big")
    started = time.monotonic()
    with pytest.raises(ResourceError) as err:
        job.run()
    assert time.monotonic() - started < 10
    assert err.value.field == field
    assert "cannot" in str(err.value)


def test_unpicklable_loop_is_built_but_rejected_by_run_before_any_ray_work():
    import ray

    # A generator cannot be pickled (a lock would do too, but Ray Serve registers a lock
    # serializer process-wide once an ingress is defined, so other tests can make it picklable).
    numbers = (i for i in range(3))

    def loop(ctx):
        next(numbers)

    job = train.TrainJob(loop=loop)  # construction checks values only
    connected = ray.is_initialized()
    with pytest.raises(SpecError) as err:
        job.run()
    assert err.value.field == "TrainJob.loop"
    assert "cannot be pickled" in str(err.value)
    assert ray.is_initialized() == connected  # no Ray work: not even a connection


def test_bad_timeout_is_a_spec_error_before_any_ray_work():
    with pytest.raises(SpecError) as err:
        train.TrainJob(loop=_loop).run(timeout_s=-1)
    assert err.value.field == "timeout_s"
