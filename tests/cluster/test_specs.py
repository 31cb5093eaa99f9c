"""raymlp.cluster specs: checked on construction, rendered to valid ray.io/v1 manifests."""

from __future__ import annotations

import runpy
import shlex
from pathlib import Path

import pytest
import yaml

from raymlp.cluster import (
    Autoscaling,
    GcsFaultTolerance,
    HeadGroup,
    RayClusterSpec,
    RayJobSpec,
    RayServiceSpec,
    ResultStore,
    ServeApplication,
    WorkerGroup,
    to_yaml,
    validate_manifest,
)
from raymlp.errors import SpecError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kuberay"

CPU = RayClusterSpec(name="cpu-only", workers=[WorkerGroup(name="cpu", replicas=2, cpus=4, memory="8Gi")])
GPU = RayClusterSpec(
    name="gpu-groups",
    workers=[
        WorkerGroup(name="a100", replicas=2, gpus=8, cpus=32, memory="256Gi",
                    node_selector={"gpu": "a100"}, tolerations=[{"key": "dedicated", "operator": "Equal",
                                                                 "value": "ml", "effect": "NoSchedule"}]),
        WorkerGroup(name="t4", replicas=1, gpus=1, cpus=4, memory="16Gi"),
    ],
)
AUTOSCALING = RayClusterSpec(
    name="autoscaled",
    workers=[WorkerGroup(name="cpu", replicas=1, min_replicas=0, max_replicas=10)],
    autoscaling=Autoscaling(idle_timeout_s=30, upscaling_mode="Conservative"),
)
GCS_FT = RayClusterSpec(
    name="ha",
    workers=[WorkerGroup(name="cpu", replicas=1)],
    gcs_fault_tolerance=GcsFaultTolerance(redis_address="redis.ray-system:6379", password_secret="redis",
                                          external_storage_namespace="team-a-ha"),
)
JOB_NEW = RayJobSpec(name="job-new", entrypoint=["python", "train.py", "--epochs", "3"], cluster=GPU,
                     working_dir="s3://bucket/code.zip", pip=["torch"], env_vars={"SEED": 1},
                     ttl_after_finished_s=60, backoff_limit=1, active_deadline_s=3600,
                     results=ResultStore(), runtime="image")
JOB_EXISTING = RayJobSpec(name="job-existing", entrypoint="python -c 'print(1)'", existing_cluster="cpu-only",
                          runtime="image")
SERVICE = RayServiceSpec(
    name="svc",
    cluster=AUTOSCALING,
    applications=[ServeApplication(name="a", import_path="pkg.mod:app", route_prefix="/a"),
                  ServeApplication(name="b", import_path="pkg.mod:build", route_prefix="/b", args={"x": 1})],
)
# (ids avoid the word "gpu": the suite's conftest skips GPU-keyword tests on CPU machines)
MATRIX = {"cpu": CPU, "accelerator_groups": GPU, "autoscaling": AUTOSCALING, "gcs_ft": GCS_FT, "job_new": JOB_NEW,
          "job_existing": JOB_EXISTING, "service": SERVICE}


@pytest.mark.parametrize("spec", MATRIX.values(), ids=MATRIX.keys())
def test_every_rendered_manifest_passes_validation(spec):
    manifest = spec.render()
    assert validate_manifest(manifest) == []
    # And it survives the YAML round trip the CLI does.
    (again,) = yaml.safe_load_all(to_yaml(manifest))
    assert again == manifest


def test_gpu_groups_render_limits_tolerations_and_gpu_image():
    spec = GPU.render()["spec"]
    a100, t4 = spec["workerGroupSpecs"]
    pod = a100["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "8"}
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert {t["key"] for t in pod["tolerations"]} == {"dedicated", "nvidia.com/gpu"}
    assert t4["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["containers"][0]["image"] == f"rayproject/ray:{GPU.ray_version}-gpu"
    assert spec["rayVersion"] == GPU.ray_version


def test_head_takes_no_ray_tasks_by_default():
    assert CPU.render()["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    head = RayClusterSpec(name="c", head=HeadGroup(ray_cpus=None)).render()["spec"]["headGroupSpec"]
    assert "num-cpus" not in head["rayStartParams"]


def test_autoscaling_v2_renders_options_and_restart_policy():
    spec = AUTOSCALING.render()["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"] == {"version": "v2", "idleTimeoutSeconds": 30, "upscalingMode": "Conservative"}
    group = spec["workerGroupSpecs"][0]
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (0, 1, 10)
    assert group["template"]["spec"]["restartPolicy"] == "Never"


def test_gcs_fault_tolerance_uses_a_secret_for_the_password():
    assert GCS_FT.render()["spec"]["gcsFaultToleranceOptions"] == {
        "redisAddress": "redis.ray-system:6379",
        "redisPassword": {"valueFrom": {"secretKeyRef": {"name": "redis", "key": "password"}}},
        "externalStorageNamespace": "team-a-ha",
    }


def test_job_on_new_and_on_existing_cluster():
    new = JOB_NEW.render()["spec"]
    assert "clusterSelector" not in new and new["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"] == "a100"
    assert yaml.safe_load(new["runtimeEnvYAML"]) == {
        "working_dir": "s3://bucket/code.zip", "pip": ["torch"], "env_vars": {"SEED": "1"},
    }
    assert (new["shutdownAfterJobFinishes"], new["ttlSecondsAfterFinished"]) == (True, 60)
    assert (new["backoffLimit"], new["activeDeadlineSeconds"]) == (1, 3600)
    assert shlex.split(new["entrypoint"]) == ["python", "train.py", "--epochs", "3"]
    existing = JOB_EXISTING.render()["spec"]
    assert existing["clusterSelector"] == {"ray.io/cluster": "cpu-only"}
    assert "rayClusterSpec" not in existing and existing["shutdownAfterJobFinishes"] is False


def test_service_renders_the_serve_config_and_upgrade_strategy():
    spec = SERVICE.render()["spec"]
    assert spec["upgradeStrategy"] == {"type": "NewCluster"}
    apps = yaml.safe_load(spec["serveConfigV2"])["applications"]
    assert [(a["name"], a["route_prefix"]) for a in apps] == [("a", "/a"), ("b", "/b")]
    assert apps[1]["args"] == {"x": 1}


@pytest.mark.parametrize(
    "build, field, words",
    [
        (lambda: WorkerGroup(name="g", replicas=5, min_replicas=1, max_replicas=2), "WorkerGroup.replicas", "between"),
        (lambda: WorkerGroup(name="g", min_replicas=3, max_replicas=2), "WorkerGroup.min_replicas", "<= max_replicas"),
        (lambda: WorkerGroup(name="G_1"), "WorkerGroup.name", "DNS-1035"),
        (lambda: WorkerGroup(name="g", gpus=-1), "WorkerGroup[g].gpus", ">= 0"),
        (lambda: WorkerGroup(name="g", memory="lots"), "WorkerGroup[g].memory", "quantity"),
        (lambda: RayClusterSpec(name="c" * 54), "RayClusterSpec.name", "at most 53"),
        (lambda: RayClusterSpec(image="rayproject/ray:2.9.0", ray_version="2.60.0"), "RayClusterSpec.image", "must agree"),
        (lambda: RayClusterSpec(workers=[WorkerGroup(name="a"), WorkerGroup(name="a")]), "RayClusterSpec.workers", "unique"),
        (lambda: Autoscaling(version="v3"), "Autoscaling.version", "one of ['v1', 'v2']"),
        (lambda: RayJobSpec(name="j", entrypoint="x"), "RayJobSpec.cluster", "exactly one"),
        (lambda: RayJobSpec(name="j", entrypoint="x", cluster=CPU, existing_cluster="c"), "RayJobSpec.cluster", "exactly one"),
        (lambda: RayJobSpec(name="j" * 48, entrypoint="x", existing_cluster="c"), "RayJobSpec.name", "at most 47"),
        (lambda: RayJobSpec(name="j", entrypoint=" ", existing_cluster="c"), "RayJobSpec.entrypoint", "non-empty"),
        (lambda: RayJobSpec(name="j", entrypoint="x", cluster=CPU, shutdown_after_finish=False, runtime="image",
                            ttl_after_finished_s=5), "RayJobSpec.ttl_after_finished_s", "shutdown_after_finish"),
        (lambda: RayJobSpec(name="j", entrypoint="x", cluster=CPU, active_deadline_s=0, results=ResultStore()),
         "RayJobSpec.active_deadline_s", ">= 1"),
        (lambda: RayJobSpec(name="j", entrypoint="x", cluster=CPU, pip="torch", results=ResultStore()),
         "RayJobSpec.pip", "sequence"),
        (lambda: ServeApplication(name="a", import_path="no colon or dot"), "ServeApplication.import_path", "module"),
        (lambda: RayServiceSpec(name="s", cluster=CPU, applications=[]), "RayServiceSpec.applications", "non-empty"),
        (lambda: RayServiceSpec(name="s", cluster=CPU, applications=[ServeApplication(name="a", import_path="m:a")],
                                upgrade_strategy="BlueGreen"), "RayServiceSpec.upgrade_strategy", "NewCluster"),
    ],
)
def test_bad_spec_names_field_value_and_what_is_allowed(build, field, words):
    with pytest.raises(SpecError) as info:
        build()
    assert info.value.field == field
    assert words in str(info.value) and field in str(info.value)


def test_ray_start_params_values_are_quoted_for_the_user():
    group = WorkerGroup(name="g", ray_start_params={"num-gpus": 2, "block": True})
    assert group.ray_start_params == {"num-gpus": "2", "block": "true"}


def test_standalone_cluster_needs_a_name():
    with pytest.raises(SpecError, match="RayClusterSpec.name"):
        RayClusterSpec().render()


def test_seed_pytorchjob_is_4_pods_x_4_gpus_and_16_nccl_workers(cli):
    code, out, _ = cli("cluster", "render", str(EXAMPLES / "seed_pytorchjob.py"))
    assert code == 0
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == ["RayJob"]
    (job,) = docs
    assert validate_manifest(job) == []
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (4, 4, 4)
    assert limits["nvidia.com/gpu"] == "4"
    # The entrypoint, parsed by the training script's own argument parser.
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["python", "train_ddp.py"]
    parser = runpy.run_path(str(EXAMPLES / "train_ddp.py"))["build_parser"]()
    args = parser.parse_args(argv[2:])
    assert (args.workers, args.gpus_per_worker, args.backend) == (16, 1.0, "nccl")
    assert args.workers * args.gpus_per_worker == group["replicas"] * int(limits["nvidia.com/gpu"])


def test_seed_inferenceservice_is_2_to_10_replicas_with_a_10_percent_canary(cli):
    code, out, _ = cli("cluster", "render", str(EXAMPLES / "seed_inferenceservice.py"))
    assert code == 0
    (svc,) = yaml.safe_load_all(out)
    assert svc["kind"] == "RayService" and validate_manifest(svc) == []
    (app,) = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"]
    stable = next(d for d in app["deployments"] if d["name"] == "stable")
    scaling = stable["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (2, 10)
    assert app["args"]["canary_percent"] == 10
    assert app["import_path"] == "examples.kuberay.canary_app:build"
    assert (EXAMPLES / "canary_app.py").is_file()
