"""raymlp.serve: not built yet."""

__all__: list[str] = []
