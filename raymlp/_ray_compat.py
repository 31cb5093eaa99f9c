"""Every use of Ray's internal (non-public) API, in one place.

raymlp pins ``ray<2.61``; an upgrade that moves or removes one of these fails here, when raymlp
is imported, not inside a worker hours into a job. ``tests/test_ray_compat.py`` exercises each
entry, and a test scans the package so that no module but this one reaches into Ray's
internals. Each entry says why it is needed and which public API would replace it.

The torch entries import torch, so they resolve on first use (in the workers only); the test
resolves them too.
"""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray._common.network_utils import build_address as _build_address
from ray.experimental import internal_kv as _kv
from ray.serve import context as _serve_context
from ray.train._internal import session as _function_session
from ray.train._internal.utils import get_address_and_port as _get_address_and_port
from ray.train.v2._internal import constants as _train_constants
from ray.train.v2._internal.execution import context as _train_context
from ray.train.v2._internal.util import TrainingFramework
from ray.train.v2.api.callback import UserCallback
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

__all__ = [
    "DataParallelTrainer",
    "TrainingFramework",
    "UserCallback",
    "abort_train_controller",
    "address_and_port",
    "build_address",
    "fast_trial_results",
    "kv_delete",
    "kv_get",
    "kv_keys",
    "kv_put",
    "metrics_export_port",
    "propagate_to_train",
    "serve_client",
    "torch_config",
    "train_report_logger",
    "use_auth_token",
    "versioned_deployment",
]


# --- GCS key-value store -----------------------------------------------------------------------
# Why: Ray Train's controller hands each report's metrics to the driver (raymlp.train's metric
# relay), and the only store both reach on any cluster without a new actor is the GCS KV.
# Waits for: a public KV API (ray.experimental.internal_kv is documented as internal).

def kv_put(key: str, value: str | bytes, *, namespace: str) -> None:
    _kv._internal_kv_put(key, value, namespace=namespace)


def kv_get(key: str, *, namespace: str) -> bytes | None:
    return _kv._internal_kv_get(key, namespace=namespace)


def kv_keys(prefix: str, *, namespace: str) -> list[bytes]:
    return list(_kv._internal_kv_list(prefix, namespace=namespace))


def kv_delete(key: str | bytes, *, namespace: str) -> None:
    _kv._internal_kv_del(key, namespace=namespace)


# --- Ray Train ---------------------------------------------------------------------------------
# Why: Ray Train V2's controller and the actors it starts inherit only the environment variables
# listed in ENV_VARS_TO_PROPAGATE; its placement-group cleaner finds the cluster through
# RAY_ADDRESS, which must therefore travel (a second Ray instance on the machine otherwise makes
# that lookup fail). Waits for: a RunConfig/runtime_env option for the controller's environment.

def propagate_to_train(*names: str) -> None:
    """Have Ray Train V2 copy these driver environment variables to its controller."""
    _train_constants.ENV_VARS_TO_PROPAGATE.update(names)


# Why: Ray Train V2's workers log every report ("Reporting training result ... TrainingReport(...)")
# at INFO through logging.getLogger(__file__), a name RunConfig's LoggingConfig (which filters
# "ray.train*" loggers only) does not cover; raymlp's console keeps it quiet. Waits for: that
# logger named under "ray.train".
def train_report_logger() -> logging.Logger:
    """The logger of Ray Train's per-report worker lines."""
    return logging.getLogger(_train_context.__file__)


# Why: TrainJob.run(timeout_s=...) stops a run that outlives its bound from a callback inside
# Ray Train's controller; TrainController.abort is what Ray's own Ctrl-C handler calls (it stops
# the workers, releases their placement group and ends the controller). Waits for: a public way
# to stop a Ray Train run.
def abort_train_controller() -> None:
    """Abort the Ray Train run whose controller actor calls this."""
    ray.get_runtime_context().current_actor.abort.remote()


# Why: the generic backend and raymlp's torch backend pick rank 0's address and a free port for
# rendezvous the way Ray's own backends do. Waits for: a public rendezvous helper in ray.train.
def address_and_port() -> tuple[str, int]:
    """(IP address, free port) of the calling worker's node."""
    return _get_address_and_port()


def build_address(host: str, port: int) -> str:
    """``host:port`` with IPv6 hosts bracketed (Ray's own formatting)."""
    return _build_address(host, port)


class _TorchConfig:
    """Ray's worker-side torch set-up functions (``ray.train.torch.config`` imports torch).

    Why: raymlp's torch backend config keeps torch out of Ray Train's controller (~1.8 s and
    ~250 MB per job, see raymlp/train/_torch.py) and calls Ray's own worker-side functions in
    the workers. Waits for: a torch-free TorchConfig in ray.train.
    """

    @property
    def _module(self):
        from ray.train.torch import config

        return config

    @property
    def context_manager(self):
        return self._module.TorchConfigContextManager

    def set_distributed_env_vars(self) -> None:
        self._module._set_torch_distributed_env_vars()

    def setup_process_group(self, **kwargs: Any) -> None:
        self._module._setup_torch_process_group(**kwargs)

    def shutdown(self, *, destroy_process_group: bool) -> None:
        self._module._shutdown_torch(destroy_process_group=destroy_process_group)


torch_config = _TorchConfig()


# --- Ray Serve ---------------------------------------------------------------------------------
# Why: the serve controller's client answers "is Serve running here, on which port, with which
# applications" without starting Serve (serve.status() starts it). Waits for: a public
# non-starting accessor of the serve details.

def serve_client() -> Any | None:
    """The running Serve controller's client, or None when Serve is not running."""
    try:
        return _serve_context._get_global_client()
    except Exception:  # Serve not started on this cluster (Ray raises several kinds)
        return None


# Why: a fixed code version makes a change of user_config alone a lightweight in-place
# reconfigure of live replicas instead of a rolling restart (~1.1 s canary moves). Ray 2.x
# removed the public ``version=`` argument of Deployment.options and kept it behind
# ``_internal=True``. Waits for: a public code-version option.
def versioned_deployment(deployment: Any, version: str, **options: Any) -> Any:
    """``deployment.options(**options)`` with a fixed code version."""
    return deployment.options(version=version, _internal=True, **options)


# --- Ray Tune function trials ----------------------------------------------------------------
# Why: a function trial's actor waits on its result queue in 0.2 s slices, and once the
# function has returned it waits a further full second for an error that a finished thread can
# no longer post (the error, if any, is queued before the thread ends). That is ~0.5 s of every
# trial at 2 concurrent trials, and the slow turnaround also defeats actor reuse (a new
# placement group and process per trial). Measured on 2 cores, 50 trivial TPE trials with
# reuse_actors: 0.53 s a trial as is, 0.19–0.24 s with short waits (benchmarks/tune_overhead.py).
# Waits for: configurable result/error fetch timeouts in Ray Tune's function trainable.

def fast_trial_results(result_wait_s: float = 0.02) -> None:
    """Shorten the result and error waits of the function trial running in this process."""
    for name in ("_RESULT_FETCH_TIMEOUT", "_ERROR_FETCH_TIMEOUT"):
        getattr(_function_session, name)  # an upgrade that drops them fails here, loudly
    _function_session._RESULT_FETCH_TIMEOUT = result_wait_s
    _function_session._ERROR_FETCH_TIMEOUT = 0.001


# --- token authentication ----------------------------------------------------------------------
# Why: raymlp.init(address, token=...) hands a token to Ray after Ray is imported; Ray's config
# (the authentication mode) and its token loader read the environment once and cache it, and
# only these two internal calls make them read it again (Ray's own token helpers do the same).
# Waits for: a token argument to ray.init.

def use_auth_token(token: str) -> None:
    """Have this process present ``token`` to token-authenticated Ray clusters."""
    import os

    from ray._raylet import AuthenticationTokenLoader, Config

    os.environ["RAY_AUTH_TOKEN"] = token
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)  # the token given wins over a token file
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


# --- metrics ---------------------------------------------------------------------------------
# Why: the port of this node's Prometheus metrics endpoint (tests and the console read Ray's
# metrics from it). Waits for: the port in ray.nodes() / the runtime context.

def metrics_export_port() -> int:
    """The Prometheus metrics port of the node this process runs on."""
    from ray._private import worker

    return int(worker.global_worker.node.metrics_export_port)

