"""Ray internals live in raymlp/_ray_compat.py only; each of its entries works on this Ray.

The scan tests keep the house one house: Ray internals only in the compat module, MLflow only
through raymlp.tracking's public names, errors only in raymlp/errors.py, value checks only in
the one spec layer.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "raymlp"


def _sources(*roots: Path):
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            yield path, path.read_text()


_RAY_INTERNALS = re.compile(
    r"ray\._private|ray\.[\w.]*\._internal\b|_internal=True|internal_kv|_get_global_client")


def test_ray_internals_are_used_only_in_the_compat_module():
    offenders = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path, text in _sources(PACKAGE, REPO / "tests", REPO / "benchmarks", REPO / "examples")
        if path.name not in ("_ray_compat.py", "test_ray_compat.py")
        for n, line in enumerate(text.splitlines(), 1) if _RAY_INTERNALS.search(line)
    ]
    assert offenders == []


def test_nothing_outside_tracking_imports_its_private_modules():
    pattern = re.compile(r"raymlp\.tracking\._|from raymlp\.tracking import _")
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for path, text in _sources(PACKAGE, REPO / "tests", REPO / "benchmarks", REPO / "examples")
        if PACKAGE / "tracking" not in path.parents
        for n, line in enumerate(text.splitlines(), 1) if pattern.search(line)
    ]
    assert offenders == []


def test_exceptions_live_in_errors_and_validators_in_the_spec_layer():
    exc = re.compile(r"^\s*class \w+\((?:[\w.]*Error|[\w.]*Exception)\b")
    validator = re.compile(r"^\s*def _(?:number|fail|nonneg_int|check_number|positive)\b")
    bad_exc, bad_val = [], []
    for path, text in _sources(PACKAGE):
        for n, line in enumerate(text.splitlines(), 1):
            where = f"{path.relative_to(REPO)}:{n}: {line.strip()}"
            if exc.search(line) and path.name != "errors.py":
                bad_exc.append(where)
            if validator.search(line) and path.name != "_spec.py":
                bad_val.append(where)
    assert bad_exc == [] and bad_val == []


def test_kv_entries_round_trip(ray_session):
    from raymlp import _ray_compat as compat

    ns = "raymlp-compat-test"
    compat.kv_put("run-1/a", "one", namespace=ns)
    compat.kv_put("run-1/b", b"two", namespace=ns)
    compat.kv_put("run-2/a", "other", namespace=ns)
    keys = sorted(compat.kv_keys("run-1/", namespace=ns))
    assert keys == [b"run-1/a", b"run-1/b"]
    assert compat.kv_get("run-1/b", namespace=ns) == b"two"
    for key in keys:
        compat.kv_delete(key, namespace=ns)
    assert compat.kv_keys("run-1/", namespace=ns) == []
    assert compat.kv_get("run-2/a", namespace=ns) == b"other"


def test_train_entries_resolve(ray_session):
    import ray

    from raymlp import _ray_compat as compat

    compat.propagate_to_train("RAYMLP_COMPAT_TEST")
    from ray.train.v2._internal import constants

    assert "RAYMLP_COMPAT_TEST" in constants.ENV_VARS_TO_PROPAGATE
    assert "RAY_ADDRESS" in constants.ENV_VARS_TO_PROPAGATE  # raymlp.init() asked for it

    @ray.remote(num_cpus=0)
    def where():
        return compat.address_and_port()

    host, port = ray.get(where.remote())
    assert isinstance(host, str) and host and 0 < int(port) < 65536
    assert compat.build_address("::1", 80) == "[::1]:80"
    assert compat.build_address("10.0.0.1", 80) == "10.0.0.1:80"
    assert compat.TrainingFramework.TORCH is not None
    assert isinstance(compat.UserCallback, type) and isinstance(compat.DataParallelTrainer, type)
    # The logger Ray Train's report lines come from, and raymlp.init() quieted it.
    logger = compat.train_report_logger()
    assert logger.name.endswith("train/v2/_internal/execution/context.py")
    assert not logger.isEnabledFor(logging.INFO)
    # What abort_train_controller calls on the controller actor (run end to end by the
    # train timeout test).
    from ray.train.v2._internal.execution.controller import TrainController

    assert callable(TrainController.abort) and callable(compat.abort_train_controller)


def test_tune_entry_shortens_the_function_trial_waits_it_names():
    from ray.train._internal import session

    from raymlp import _ray_compat as compat

    before = session._RESULT_FETCH_TIMEOUT, session._ERROR_FETCH_TIMEOUT
    assert before[0] > 0.02 and before[1] >= 0.5  # Ray's defaults, the reason for the entry
    try:
        compat.fast_trial_results()
        assert session._RESULT_FETCH_TIMEOUT == 0.02 and session._ERROR_FETCH_TIMEOUT < 0.01
    finally:
        session._RESULT_FETCH_TIMEOUT, session._ERROR_FETCH_TIMEOUT = before


def test_torch_entries_resolve():
    pytest.importorskip("torch")
    from raymlp import _ray_compat as compat

    tc = compat.torch_config
    assert callable(tc.context_manager)
    for name in ("_set_torch_distributed_env_vars", "_setup_torch_process_group",
                 "_shutdown_torch"):
        assert callable(getattr(tc._module, name)), name


def test_serve_entries_resolve(ray_session):
    from ray import serve

    from raymlp import _ray_compat as compat

    client = compat.serve_client()
    assert client is None or hasattr(client, "get_serve_details")

    @serve.deployment
    class Echo:
        def __call__(self, request):
            return "ok"

    dep = compat.versioned_deployment(Echo, "raymlp-test", num_replicas=2)
    assert dep.version == "raymlp-test" and dep.num_replicas == 2
    assert compat.metrics_export_port() > 0
