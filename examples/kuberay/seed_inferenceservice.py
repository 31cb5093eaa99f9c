"""The seed KServe InferenceService (2-10 replicas, a 10 % canary) as a KubeRay RayService.

KServe scales the predictor between 2 and 10 pods and sends 10 % of the traffic to the canary
revision. Here the Serve application of ``canary_app.py`` does the split; its stable model
deployment autoscales between 2 and 10 replicas, and the worker group autoscales with it
(in-tree autoscaler v2). The application is plain Ray Serve, so the stock image runs it
(``runtime="image"``); its code is this repository, zipped and uploaded to the storage root of
``cluster/mlflow`` by ``raymlp cluster apply``. Render or apply it with::

    raymlp cluster render examples/kuberay/seed_inferenceservice.py
    raymlp cluster apply examples/kuberay/seed_inferenceservice.py -n team-a
"""

from pathlib import Path

from raymlp.cluster import (
    Autoscaling,
    RayClusterSpec,
    RayServiceSpec,
    ResultStore,
    ServeApplication,
    WorkerGroup,
    to_yaml,
)

# The repository root: the import path below is relative to it (raymlp cluster apply packages
# it, leaving out virtual environments, caches and .git).
CODE_DIR = str(Path(__file__).resolve().parents[2])

MIN_REPLICAS, MAX_REPLICAS, CANARY_PERCENT = 2, 10, 10

service = RayServiceSpec(
    name="digits-inference",
    cluster=RayClusterSpec(
        workers=[
            WorkerGroup(name="cpu-workers", replicas=1, min_replicas=1, max_replicas=5, cpus=4, memory="8Gi")
        ],
        autoscaling=Autoscaling(idle_timeout_s=120),
    ),
    applications=[
        ServeApplication(
            name="digits",
            import_path="examples.kuberay.canary_app:build",
            route_prefix="/digits",
            args={"stable": "models:/digits@champion", "canary": "models:/digits/7", "canary_percent": CANARY_PERCENT},
            runtime_env={"working_dir": CODE_DIR},
            deployments=[
                {
                    "name": "stable",
                    "autoscaling_config": {
                        "min_replicas": MIN_REPLICAS,
                        "max_replicas": MAX_REPLICAS,
                        "target_ongoing_requests": 2,
                    },
                },
                {"name": "canary", "num_replicas": 1},
                {"name": "Router", "num_replicas": 2},
            ],
        )
    ],
    upgrade_strategy="NewCluster",
    results=ResultStore(),
    runtime="image",
)

if __name__ == "__main__":
    print(to_yaml(service.render()), end="")
