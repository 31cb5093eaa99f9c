"""One Ray instance and one raymlp home (MLflow store, storage) for the whole test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Ray Serve keeps a stopping replica behind its HAProxy ingress reachable for this long (30 s by
# default) so that an external cloud load balancer can deregister it before it refuses
# connections; here the only balancer is the HAProxy on this machine, which reloads in well
# under a second and retries a refused connection on another replica. Every delete, downscale
# and rollout in the suite otherwise waits the full 30 s per replica. Set before any Ray
# instance starts, so that the controller and the replicas (which inherit it from the raylet)
# agree; a test may still set its own.
os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "3")


def _has_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=False).returncode == 0


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def raymlp_home(tmp_path_factory) -> Path:
    """A fresh raymlp home: the MLflow store and the storage root live here."""
    from raymlp import _config

    home = tmp_path_factory.mktemp("raymlp-home")
    for var in list(os.environ):
        if var.startswith("RAYMLP_") or var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
            del os.environ[var]
    os.environ["RAYMLP_HOME"] = str(home)
    _config.reset()
    return home


@pytest.fixture(scope="session")
def ray_session(raymlp_home, request):
    """The session's local Ray instance, started through raymlp.init().

    It shows Ray no GPU unless the session runs GPU tests (``-m gpu``), so the CPU suite
    behaves the same on a GPU host.
    """
    import raymlp

    wants_gpu = any("gpu" in item.keywords for item in request.session.items)
    info = raymlp.init(num_cpus=4, num_gpus=None if wants_gpu else 0)
    yield info
    raymlp.shutdown()


@pytest.fixture(scope="session")
def digits_job(ray_session, examples_path):
    """``(job, result)``: the examples' digits MLP trained once by raymlp.train (2 workers, 12
    epochs, a checkpoint each epoch, the best 2 kept by val_accuracy, the data's hash and name
    recorded). Shared by the test that checks the job and its MLflow records
    (tests/train/test_torch.py) and the one that serves its model by alias
    (tests/serve/test_resilience.py): a 2-worker job costs ~25 s to start on 2 cores."""
    import train_digits

    from raymlp import tracking, train

    job = train.TrainJob(
        loop=train_digits.digits_loop, framework="torch", name="digits-test",
        scaling=train.Scaling(workers=2),
        config={"lr": 3e-3, "hidden": 64, "batch_size": 32, "epochs": 12},
        checkpointing=train.Checkpointing(every=1, keep=2, score="val_accuracy", mode="max"),
        data_hash=tracking.data_hash(*train_digits.load_digits_split()), data_name="digits",
    )
    return job, job.run()


@pytest.fixture(scope="session")
def examples_path():
    sys.path.insert(0, str(REPO / "examples"))
    yield REPO / "examples"
    sys.path.remove(str(REPO / "examples"))


#: The shared running head while it runs (see ``ray_head``).
_HEAD: dict = {}


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """A separate running Ray cluster on this machine, as `ray start --head` makes one (what
    `raymlp up` and `raymlp serve` start when nothing is configured): ``raymlp._local.start``
    with free ports, its own temp dir, a job API, 2 CPUs, no GPU, and a raymlp home of its own in
    its environment (Ray workers on it write there). Yields ``(head, home)``.

    Shared by the modules that need one (``raymlp submit`` / ``jobs``, schedules that outlive
    their creator) instead of one per module: each start costs ~15-25 s on 2 cores. It is
    killed right after the last test that uses it (``pytest_runtest_teardown`` below), so it
    does not idle beside the rest of the suite."""
    from unittest import mock

    from raymlp import _local

    home = tmp_path_factory.mktemp("head-home")
    # The head sees no raymlp setting of this process, nor the token mode that this process's
    # own Ray instance (ray_session) put in its environment: as `ray start --head` on this
    # machine, no authentication (what raymlp's local head does).
    with mock.patch.dict(os.environ):
        for var in [v for v in os.environ if v.startswith(("RAYMLP_", "RAY_AUTH_"))
                    or v in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")]:
            del os.environ[var]
        head = _local.start(record=False, num_cpus=2, num_gpus=0,
                            env={"RAYMLP_HOME": str(home), "RAY_AUTH_MODE": "disabled"})
    _HEAD["head"] = head
    try:
        yield head, home
    finally:
        _stop_shared_head()


def _stop_shared_head() -> None:
    from tests.helpers import kill_nodes

    head = _HEAD.pop("head", None)
    if head is not None:
        kill_nodes(head)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    if "head" not in _HEAD or "ray_head" not in item.fixturenames:
        return
    items = item.session.items
    later = items[items.index(item) + 1:] if item in items else []
    if not any("ray_head" in other.fixturenames for other in later):
        _stop_shared_head()
