"""raymlp.pipelines: not built yet."""

__all__: list[str] = []
