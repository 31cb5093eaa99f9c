"""raymlp.serve: models from the MLflow registry behind the Open Inference Protocol on Ray Serve.

A service is one call: the stable model (``models:/name@alias``, ``models:/name/3``, a run's
model or a path), optional canary with a traffic percent, autoscaling, batching::

    from raymlp import serve
    svc = serve.InferenceService(name="digits", model="models:/digits@champion",
                                 autoscaling=serve.Autoscaling(min_replicas=1, max_replicas=4))
    print(svc.deploy().url)          # http://127.0.0.1:8000/digits
    svc.canary("models:/digits/7", percent=10)
    svc.promote()                    # or svc.rollback()

Endpoints under the service URL: ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/NAME``,
``/v2/models/NAME/ready``, ``/v2/models/NAME/infer`` (and ``/versions/V/...``), KServe v1
``/v1/models/NAME:predict`` and ``:explain``. A :class:`Transformer` adds user pre- and
post-processing around the model inside each replica.
"""

from raymlp.serve._service import (
    ServiceError,
    ServiceStatus,
    VariantStatus,
    canary,
    delete,
    deploy,
    list_services,
    promote,
    rollback,
    set_canary_percent,
    start,
    status,
)
from raymlp.serve._spec import Autoscaling, Batching, InferenceService, Resources
from raymlp.serve._transformer import Transformer

__all__ = [
    "Autoscaling",
    "Batching",
    "InferenceService",
    "Resources",
    "ServiceError",
    "ServiceStatus",
    "Transformer",
    "VariantStatus",
    "canary",
    "delete",
    "deploy",
    "list_services",
    "promote",
    "rollback",
    "set_canary_percent",
    "start",
    "status",
]
