"""The seed Kubeflow PyTorchJob, 1 master + 3 workers with 4 GPUs each, as a KubeRay RayJob.

Kubeflow runs four pods, each a torch.distributed process group member with 4 GPUs. On Ray
the same hardware is one worker group of 4 pods x 4 GPUs, and the entrypoint starts 16 Ray
Train workers (one per GPU) with the NCCL backend; the head runs no training (``num-cpus: 0``).
Render it with::

    raymlp cluster render examples/kuberay/seed_pytorchjob.py
"""

from raymlp.cluster import RayClusterSpec, RayJobSpec, WorkerGroup, to_yaml

# Where the cluster fetches this repository's code from (a zip of the repo, or an s3:// or
# gs:// URI); replace it with where your copy lives.
CODE_URI = "https://github.com/your-org/raymlp/archive/refs/heads/main.zip"

PODS, GPUS_PER_POD = 4, 4

job = RayJobSpec(
    name="pytorchjob-seed",
    entrypoint=[
        "python", "examples/kuberay/train_ddp.py",
        "--workers", str(PODS * GPUS_PER_POD),
        "--gpus-per-worker", "1",
        "--backend", "nccl",
        "--epochs", "10",
    ],
    cluster=RayClusterSpec(
        workers=[
            WorkerGroup(
                name="gpu-workers",
                replicas=PODS,
                cpus=16,
                memory="64Gi",
                gpus=GPUS_PER_POD,
                node_selector={"nvidia.com/gpu.present": "true"},
            )
        ],
    ),
    working_dir=CODE_URI,
    pip=["torch>=2.3,<3"],
    shutdown_after_finish=True,
    ttl_after_finished_s=600,
    backoff_limit=2,
    active_deadline_s=6 * 3600,
)

if __name__ == "__main__":
    print(to_yaml(job.render()), end="")
