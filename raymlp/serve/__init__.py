"""raymlp.serve: models from the MLflow registry behind the Open Inference Protocol on Ray Serve.

Spec, action, handle: an :class:`InferenceService` says what to serve (the stable model,
``models:/name@alias``, ``models:/name/3``, a run's model or a path; an optional canary with a
traffic percent; autoscaling; batching); ``deploy()`` puts it on Ray Serve and returns a
:class:`Service` handle that drives the rollout::

    from raymlp import serve
    service = serve.InferenceService(
        name="digits", model="models:/digits@champion",
        autoscaling=serve.Autoscaling(min_replicas=1, max_replicas=4)).deploy()
    print(service.url)               # http://127.0.0.1:8000/digits
    service.canary("models:/digits/7", percent=10)
    service.promote()                # or service.rollback()
    serve.get("digits").status()     # the same service, from any process on the cluster

Endpoints under the service URL: ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/NAME``,
``/v2/models/NAME/ready``, ``/v2/models/NAME/infer`` (and ``/versions/V/...``), KServe v1
``/v1/models/NAME:predict`` and ``:explain``. A :class:`Transformer` adds user pre- and
post-processing around the model inside each replica. Errors: ``raymlp.errors.ServiceError``
(unknown service, no canary, a failed deploy), ``raymlp.errors.TimeoutError`` (a wait ran out).
"""

from raymlp.serve._service import (
    Service,
    ServiceStatus,
    VariantStatus,
    get,
    list_services,
    start,
)
from raymlp.serve._spec import Autoscaling, Batching, InferenceService, Resources
from raymlp.serve._transformer import Transformer

__all__ = [
    "Autoscaling",
    "Batching",
    "InferenceService",
    "Resources",
    "Service",
    "ServiceStatus",
    "Transformer",
    "VariantStatus",
    "get",
    "list_services",
    "start",
]
