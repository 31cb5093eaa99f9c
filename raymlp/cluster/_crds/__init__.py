"""Compact copies of the KubeRay ``ray.io/v1`` CRD validation schemas, shipped with raymlp.

The validator needs the CRDs' ``openAPIV3Schema`` at run time on a user's machine, where the
KubeRay release files are not around. The full CRD files are ~3.3 MB (descriptions, the
deprecated ``v1alpha1`` version); the validation schema alone, without descriptions, minified
and gzipped, is ~31 kB for the three kinds, so it ships as package data. The files here are
*generated*, never edited: ``python -m raymlp.cluster._crds.generate DIR`` rebuilds them from a
KubeRay release's ``ray.io_*.yaml`` files (a test checks they match ``../shared/kuberay-crds``).
"""

from __future__ import annotations

import functools
import gzip
import json
from importlib import resources
from typing import Any

__all__ = ["KINDS", "KUBERAY_VERSION", "load_schema"]

#: The KubeRay release whose CRDs the shipped schemas come from.
KUBERAY_VERSION = "v1.7.0"

#: kind -> plural resource name, for the three ``ray.io/v1`` kinds.
KINDS = {"RayCluster": "rayclusters", "RayJob": "rayjobs", "RayService": "rayservices"}


@functools.cache
def load_schema(kind: str) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of ``ray.io/v1`` ``kind`` (descriptions stripped)."""
    plural = KINDS[kind]
    data = resources.files(__package__).joinpath(f"{plural}.json.gz").read_bytes()
    return json.loads(gzip.decompress(data))
