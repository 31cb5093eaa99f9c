"""The public surface of each capability is what its __all__ lists; pinned here."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import raymlp

EXPECTED = {
    "raymlp": ["RaymlpError", "__version__", "cluster", "configure", "init", "pipelines", "serve",
               "shutdown", "tracking", "train", "tune"],
    "raymlp.errors": ["ConfigError", "DependencyError", "ExperimentError", "JobConnectionError",
                      "JobError", "KubernetesError", "PipelineError", "RaymlpError", "RequestError", "ResourceError",
                      "ServiceError", "SpecError", "TimeoutError", "TrackingError"],
    "raymlp.train": ["Backend", "Checkpointing", "Scaling", "TrainContext", "TrainJob",
                     "TrainResult", "WorkerInfo"],
    "raymlp.tracking": ["BufferedRun", "FLAVORS", "Flavor", "Run", "TAG_DATA_HASH", "TAG_KIND", "TAG_MODEL_URI",
                        "TAG_SOURCE_RUN", "child_runs", "client", "data_hash", "dataset_digest",
                        "download_model", "experiment_id", "flavor", "get_run", "get_version",
                        "lineage", "load_model", "logged_model", "metric_history",
                        "model_metadata", "native_flavor", "register_model", "save_model",
                        "set_alias", "start_run", "Writer", "writer"],
    "raymlp.serve": ["Autoscaling", "Batching", "InferenceService", "Resources", "Service",
                     "ServiceStatus", "Transformer", "VariantStatus", "get", "list_services",
                     "start"],
    "raymlp.cluster": ["Autoscaling", "ClusterResource", "GcsFaultTolerance", "HeadGroup",
                       "JobConnectionError", "KUBERAY_VERSION", "KubeRayClient", "KubernetesError",
                       "RayClusterSpec", "RayJobSpec", "RayServiceSpec", "ResourceStatus", "ResultStore",
                       "ServeApplication", "ValidationIssue", "WorkerGroup", "connect",
                       "dashboard_url", "follow_job", "is_ray_resource", "submit_job", "to_yaml",
                       "validate_manifest"],
    "raymlp.tune": ["ALGORITHMS", "EarlyStopping", "Experiment", "ExperimentResult", "Objective",
                    "Trial", "TrialContext", "choice", "experiments", "grid", "logint",
                    "loguniform", "quniform", "randint", "resume", "status", "uniform"],
    "raymlp.pipelines": ["HTML", "Artifact", "Collected", "Component", "ComponentOptions",
                         "Condition", "Dataset", "Elif", "Else", "ExitHandler", "If", "Input",
                         "Markdown", "Metrics", "Model", "Output", "ParallelFor", "Pipeline",
                         "PipelineRun", "PipelineSpec", "PipelineTaskFinalStatus", "Schedule",
                         "ScheduleHandle", "StepContext", "StepStatus", "Task", "compile",
                         "component", "current_step", "flush_tracking", "get_run", "get_schedule",
                         "lineage", "list_runs", "list_schedules", "load", "log_metric",
                         "pipeline", "resume"],
}


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_exported_members(module):
    """The whole public surface, pinned: a name added or dropped is a decision, made here."""
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(EXPECTED[module])
    for name in mod.__all__:
        assert getattr(mod, name) is not None


def test_errors_share_one_root_and_the_cluster_reexports_are_the_same_classes():
    from raymlp import cluster, errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.RaymlpError)
    assert cluster.KubernetesError is errors.KubernetesError
    assert cluster.JobConnectionError is errors.JobConnectionError
    assert issubclass(errors.TimeoutError, TimeoutError)  # builtins: `except TimeoutError` works


def test_import_raymlp_is_cheap_and_lazy():
    code = ("import sys, raymlp; print('mlflow' in sys.modules, 'torch' in sys.modules, "
            "'ray.train' in sys.modules); raymlp.train; print('ray.train' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False", "True"]
    assert raymlp.__version__


def test_cli_help_and_version():
    from raymlp import cli

    out = subprocess.run([sys.executable, "-m", "raymlp.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    import argparse

    sub = next(a for a in cli.build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    commands = ("train", "serve", "version", "cluster", "submit", "jobs", "up", "down")
    assert set(commands) <= set(sub.choices)
    assert all(command in out for command in commands)
    ver = subprocess.run([sys.executable, "-m", "raymlp.cli", "version"], capture_output=True,
                         text=True, check=True).stdout
    assert ver.splitlines()[0] == f"raymlp {raymlp.__version__}"
    assert ver.splitlines()[1].startswith("ray 2.60")
    assert cli.main(["train"]) == 2  # no loop: a clear error, exit 2
