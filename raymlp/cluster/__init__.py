"""raymlp.cluster: KubeRay resources, their validation, and Ray job submission."""

__all__: list[str] = []
