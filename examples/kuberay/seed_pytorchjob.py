"""The seed Kubeflow PyTorchJob, 1 master + 3 workers with 4 GPUs each, as a KubeRay RayJob.

Kubeflow runs four pods, each a torch.distributed process group member with 4 GPUs. On Ray
the same hardware is one worker group of 4 pods x 4 GPUs, and the entrypoint starts 16 Ray
Train workers (one per GPU) with the NCCL backend; the head runs no training (``num-cpus: 0``).

It runs on the stock ``rayproject/ray`` GPU image as it is: raymlp and its requirements travel
with the job (``runtime="ship"``), and this folder is its working directory; ``raymlp cluster
apply`` zips both and uploads them to the storage root before it applies the RayJob. The run,
the checkpoints and the model go to the ``cluster/mlflow`` services (``ResultStore()``), so they
outlive the cluster, which is deleted after the job. Render or apply it with::

    raymlp cluster render examples/kuberay/seed_pytorchjob.py
    raymlp cluster apply examples/kuberay/seed_pytorchjob.py -n team-a
"""

from pathlib import Path

from raymlp.cluster import RayClusterSpec, RayJobSpec, ResultStore, WorkerGroup, to_yaml

PODS, GPUS_PER_POD = 4, 4

job = RayJobSpec(
    name="pytorchjob-seed",
    entrypoint=[
        "python", "train_ddp.py",
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
    working_dir=str(Path(__file__).resolve().parent),
    results=ResultStore(experiment="pytorchjob-seed"),
    runtime="ship",
    extras=("torch",),
    shutdown_after_finish=True,
    ttl_after_finished_s=600,
    backoff_limit=2,
    active_deadline_s=6 * 3600,
)

if __name__ == "__main__":
    print(to_yaml(job.render()), end="")
