"""raymlp.tune: not built yet."""

__all__: list[str] = []
