"""The ``raymlp`` command line.

Each capability contributes its subcommands through a ``_cli`` module with
``register(subparsers)``; this module only assembles them and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from raymlp import __version__
from raymlp.errors import RaymlpError

# Modules that add subcommands, in help order.
_COMMAND_MODULES = (
    "raymlp.train._cli",
    "raymlp.cluster._cli",
    "raymlp.serve._cli",
    "raymlp.tune._cli",
    "raymlp.pipelines._cli",
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
    up = sub.add_parser("up", help="start a local Ray head for work that outlives a command "
                                   "(services, schedules); prints its address")
    up.add_argument("--num-cpus", type=int, help="CPUs of the head (default: all)")
    up.add_argument("--num-gpus", type=int, help="GPUs of the head (default: those detected)")
    up.set_defaults(func=_up)
    down = sub.add_parser("down", help="stop the local Ray head that `raymlp up` (or a command "
                                       "that needed one) started, and everything on it")
    down.set_defaults(func=_down)
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


def _up(args: argparse.Namespace) -> int:
    from raymlp import _local

    head = _local.current()
    if head is None:
        head = _local.start(num_cpus=args.num_cpus, num_gpus=args.num_gpus)
        print(f"started a local Ray head at {head.address}", file=sys.stderr)
    else:
        print(f"a local Ray head is already up at {head.address}", file=sys.stderr)
    print(f"dashboard {head.dashboard_url}; stop it with `raymlp down`", file=sys.stderr)
    print(head.address)
    return 0


def _down(args: argparse.Namespace) -> int:
    from raymlp import _local

    head = _local.stop()
    print(f"stopped the local Ray head at {head.address}" if head else "no local Ray head to stop")
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
