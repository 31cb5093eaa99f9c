"""The ``raymlp serve`` subcommands: deploy, status, promote, rollback, list, delete.

They act on the Ray cluster at ``--address`` / ``RAYMLP_RAY_ADDRESS`` / ``RAY_ADDRESS``, or on a
local one started with ``ray start --head`` (``auto``): a service outlives the command, so the
command never starts a throwaway Ray instance of its own. Exit codes: 0 success, 2 bad input or
an unknown service (a :class:`RaymlpError`, mapped by ``raymlp.cli``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``serve`` and its actions to the ``raymlp`` command."""
    serve = subparsers.add_parser("serve", help="deploy and roll out models on Ray Serve "
                                                "(Open Inference Protocol v2, KServe v1)")
    sub = serve.add_subparsers(dest="serve_command", metavar="ACTION", required=True)

    deploy = sub.add_parser("deploy", help="deploy or update a service; prints its base URL")
    deploy.add_argument("--name", required=True, help="service name (a DNS label)")
    deploy.add_argument("--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION, "
                                                        "runs:/ID/PATH or a model directory")
    deploy.add_argument("--canary-model", help="a second model URI taking --canary-percent")
    deploy.add_argument("--canary-percent", type=float, default=None)
    deploy.add_argument("--min-replicas", type=int, help="autoscaling floor (0: scale to zero)")
    deploy.add_argument("--max-replicas", type=int, help="autoscaling ceiling")
    deploy.add_argument("--target-ongoing-requests", type=float, default=2.0)
    deploy.add_argument("--replicas", type=int, default=1, help="fixed count without autoscaling")
    deploy.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per replica")
    deploy.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per replica")
    deploy.add_argument("--max-batch-size", type=int, help="enable batching up to this size")
    deploy.add_argument("--max-wait-ms", type=float, default=2.0, help="batch wait")
    deploy.add_argument("--flavor", default="auto")
    deploy.add_argument("--payload-log", help="log requests and answers to a file or http(s) URL")
    deploy.add_argument("--transformer", metavar="MODULE:CLASS",
                        help="pre/post-processing class (importable here; the current "
                             "directory is searched first); shipped to the replicas by value")
    deploy.add_argument("--explainer", choices=["shap"], help="add the :explain endpoint")
    deploy.add_argument("--access-log", action="store_true",
                        help="write Ray Serve's per-request access log in every replica")
    deploy.add_argument("--port", type=int, help="HTTP port when this starts Ray Serve (8000)")
    _address(deploy)
    deploy.set_defaults(func=_deploy)

    for action, helptext, func in (
        ("status", "print a service's state as JSON", _show),
        ("promote", "make the canary the stable version", _show),
        ("rollback", "remove the canary", _show),
        ("delete", "delete a service", _delete),
    ):
        p = sub.add_parser(action, help=helptext)
        p.add_argument("name", metavar="NAME")
        _address(p)
        p.set_defaults(func=func)
    lst = sub.add_parser("list", help="list the services on the cluster")
    _address(lst)
    lst.set_defaults(func=_list)


def _address(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="Ray cluster address (default: RAYMLP_RAY_ADDRESS, "
                                     "RAY_ADDRESS, else a local 'ray start --head' cluster)")


def _connect(args: argparse.Namespace) -> None:
    import raymlp
    from raymlp import _config

    raymlp.init(args.address or _config.get().ray_address or "auto")


def _print_status(st) -> None:
    import dataclasses

    print(json.dumps(dataclasses.asdict(st), indent=2))


def _deploy(args: argparse.Namespace) -> int:
    import os
    import sys

    from raymlp import serve

    if args.transformer and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    autoscaling = None
    if args.min_replicas is not None or args.max_replicas is not None:
        low = args.min_replicas if args.min_replicas is not None else 1
        autoscaling = serve.Autoscaling(
            min_replicas=low, max_replicas=args.max_replicas if args.max_replicas else max(low, 1),
            target_ongoing_requests=args.target_ongoing_requests)
    spec = serve.InferenceService(
        name=args.name, model=args.model, canary_model=args.canary_model,
        canary_percent=args.canary_percent if args.canary_percent is not None
        else (10.0 if args.canary_model else 0.0),
        flavor=args.flavor, replicas=args.replicas, autoscaling=autoscaling,
        batching=serve.Batching(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms)
        if args.max_batch_size else None,
        resources=serve.Resources(num_cpus=args.num_cpus, num_gpus=args.num_gpus),
        payload_log=args.payload_log, transformer=args.transformer, explainer=args.explainer,
        access_log=args.access_log)
    _connect(args)
    st = spec.deploy(port=args.port)
    print(st.url)
    return 0


def _show(args: argparse.Namespace) -> int:
    """status, promote and rollback: act on the service, print its state as JSON."""
    from raymlp import serve

    _connect(args)
    action = {"status": serve.status, "promote": serve.promote, "rollback": serve.rollback}
    _print_status(action[args.serve_command](args.name))
    return 0


def _delete(args: argparse.Namespace) -> int:
    from raymlp import serve

    _connect(args)
    serve.delete(args.name)
    print(f"deleted {args.name}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from raymlp import serve

    _connect(args)
    for name in serve.list_services():
        st = serve.status(name)
        canary = f" canary={st.canary.uri}@{st.canary.percent:g}%" if st.canary else ""
        print(f"{name}\t{st.status}\t{st.url}\tstable={st.stable.uri}{canary}")
    return 0
