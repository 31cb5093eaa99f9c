"""The ``raymlp`` command line.

Each capability contributes its subcommands through a ``_cli`` module with
``register(subparsers)``; this module only assembles them and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from raymlp import __version__
from raymlp.errors import RaymlpError

# Modules that add subcommands, in help order.
_COMMAND_MODULES = (
    "raymlp.train._cli",
    "raymlp.cluster._cli",
    "raymlp.serve._cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raymlp",
        description="raymlp: distributed training, tuning, serving and pipelines on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"raymlp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    version = sub.add_parser("version", help="print the raymlp, Ray and MLflow versions")
    version.set_defaults(func=_version)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _version(args: argparse.Namespace) -> int:
    from importlib.metadata import PackageNotFoundError, version

    print(f"raymlp {__version__}")
    for dist in ("ray", "mlflow"):
        try:
            print(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            print(f"{dist} not installed")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except RaymlpError as exc:
        print(f"raymlp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
