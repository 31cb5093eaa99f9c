"""``raymlp cluster`` / ``submit`` / ``jobs`` subcommands (filled in by the cluster capability)."""


def register(subparsers) -> None:
    """Add this capability's subcommands (none yet)."""
