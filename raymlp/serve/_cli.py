"""The ``raymlp serve`` subcommands: deploy, status, promote, rollback, list, delete, schema.

``deploy`` takes every :class:`~raymlp.serve.InferenceService` field: flags for the common ones,
and a YAML file with ``--set KEY=VALUE`` overrides for all of them (read with the spec layer, so
an unknown or ill-typed field is a ``SpecError`` naming it); ``schema`` prints the file's JSON
Schema. They act on the Ray cluster at ``--address`` / ``RAYMLP_RAY_ADDRESS`` / ``RAY_ADDRESS``;
with none of those, on raymlp's managed local head: ``deploy`` starts one on first need (and
says so), ``raymlp down`` stops it. Exit codes: 0 success, 2 bad input or an unknown service (a
:class:`RaymlpError`, mapped by ``raymlp.cli``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

# Flag destinations -> spec fields (dotted: nested specs); a flag left out keeps the file's
# value or the spec's default.
_FIELDS = {
    "name": "name", "model": "model", "canary_model": "canary_model",
    "canary_percent": "canary_percent", "flavor": "flavor", "replicas": "replicas",
    "cpus": "resources.cpus", "gpus": "resources.gpus", "memory": "resources.memory",
    "min_replicas": "autoscaling.min_replicas", "max_replicas": "autoscaling.max_replicas",
    "target_ongoing_requests": "autoscaling.target_ongoing_requests",
    "max_batch_size": "batching.max_batch_size", "max_wait_s": "batching.max_wait_s",
    "max_ongoing_requests": "max_ongoing_requests", "max_request_bytes": "max_request_bytes",
    "auth_token": "auth_token", "payload_log": "payload_log", "transformer": "transformer",
    "explainer": "explainer", "access_log": "access_log",
}


def register(subparsers: Any) -> None:
    """Add ``serve`` and its actions to the ``raymlp`` command."""
    serve = subparsers.add_parser("serve", help="deploy and roll out models on Ray Serve "
                                                "(Open Inference Protocol v2, KServe v1)")
    sub = serve.add_subparsers(dest="serve_command", metavar="ACTION", required=True)

    deploy = sub.add_parser("deploy", help="deploy or update a service; prints its base URL")
    deploy.add_argument("file", nargs="?", metavar="SERVICE.yaml",
                        help="an InferenceService as YAML (`raymlp serve schema` gives its "
                             "schema); flags and --set override its fields")
    deploy.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="set any spec field, e.g. --set autoscaling.max_replicas=4")
    deploy.add_argument("--name", help="service name (a DNS label)")
    deploy.add_argument("--model", help="models:/NAME@ALIAS, models:/NAME/VERSION, "
                                        "runs:/ID/PATH or a model directory")
    deploy.add_argument("--canary-model", help="a second model URI taking --canary-percent "
                                               "(10 unless given)")
    deploy.add_argument("--canary-percent", type=float)
    deploy.add_argument("--flavor", help="auto (default), or a raymlp.tracking flavor")
    deploy.add_argument("--replicas", type=int, help="fixed count without autoscaling")
    deploy.add_argument("--cpus", type=float, help="CPUs per replica (default 1)")
    deploy.add_argument("--gpus", type=float, help="GPUs per replica (default 0)")
    deploy.add_argument("--memory", type=int, help="memory per replica, in bytes")
    deploy.add_argument("--min-replicas", type=int, help="autoscaling floor (0: scale to zero)")
    deploy.add_argument("--max-replicas", type=int, help="autoscaling ceiling")
    deploy.add_argument("--target-ongoing-requests", type=float,
                        help="autoscaling target of requests in flight per replica")
    deploy.add_argument("--max-batch-size", type=int, help="enable batching up to this size")
    deploy.add_argument("--max-wait-s", type=float, help="longest wait for a batch to fill, s")
    deploy.add_argument("--max-ongoing-requests", type=int, help="requests per replica at once")
    deploy.add_argument("--max-request-bytes", type=int, help="larger bodies get 413")
    deploy.add_argument("--auth-token", help="require 'Authorization: Bearer TOKEN'")
    deploy.add_argument("--payload-log", help="log requests and answers to a file or http(s) URL")
    deploy.add_argument("--transformer", metavar="MODULE:CLASS",
                        help="pre/post-processing class ('module:Class', importable here with "
                             "the current directory searched first, or 'path/file.py:Class'); "
                             "shipped to the replicas by value")
    deploy.add_argument("--explainer", help="'shap' adds the :explain endpoint")
    deploy.add_argument("--access-log", action="store_const", const=True,
                        help="write Ray Serve's per-request access log in every replica")
    deploy.add_argument("--port", type=int, help="HTTP port when this starts Ray Serve (8000)")
    deploy.add_argument("--timeout-s", type=float, default=300.0,
                        help="how long to wait for the service to be ready (300)")
    _address(deploy)
    deploy.set_defaults(func=_deploy)

    for action, helptext in (("status", "print a service's state as JSON"),
                             ("promote", "make the canary the stable version"),
                             ("rollback", "remove the canary")):
        p = sub.add_parser(action, help=helptext)
        p.add_argument("name", metavar="NAME")
        _address(p)
        p.set_defaults(func=_show)
    delete = sub.add_parser("delete", help="delete a service")
    delete.add_argument("name", metavar="NAME")
    _address(delete)
    delete.set_defaults(func=_delete)
    lst = sub.add_parser("list", help="list the services on the cluster")
    _address(lst)
    lst.set_defaults(func=_list)
    schema = sub.add_parser("schema", help="print the JSON Schema of a SERVICE.yaml file")
    schema.set_defaults(func=_schema)


def _address(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="the Ray cluster (GCS host:port; default: "
                                     "RAYMLP_RAY_ADDRESS, RAY_ADDRESS, else raymlp's local head)")


def _connect(args: argparse.Namespace, *, start_if_missing: bool) -> None:
    """Join the cluster the service lives on; ``deploy`` may start the managed local head."""
    import raymlp
    from raymlp import _local

    address = _local.resolve_address(args.address, start_if_missing=start_if_missing,
                                     announce=lambda text: print(text, file=sys.stderr))
    raymlp.init(address)


def spec_data(args: argparse.Namespace) -> dict:
    """The service as plain data: the file, then the flags given, then ``--set``."""
    import yaml

    from raymlp._spec import fail
    from raymlp._util import apply_overrides, parse_key_values

    data: dict = {}
    if args.file:
        try:
            with open(args.file) as f:
                data = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise fail("SERVICE.yaml", args.file, f"a readable YAML file ({exc})") from None
        if not isinstance(data, dict):
            raise fail("SERVICE.yaml", data, "a mapping of InferenceService fields")
    flags = {field: getattr(args, dest) for dest, field in _FIELDS.items()
             if getattr(args, dest) is not None}
    if args.canary_model is not None and args.canary_percent is None:
        flags.setdefault("canary_percent", 10.0)
    return apply_overrides(apply_overrides(data, flags), parse_key_values(args.set))


def _deploy(args: argparse.Namespace) -> int:
    from raymlp import _console
    from raymlp._spec import from_data
    from raymlp.serve import InferenceService

    spec = from_data(InferenceService, spec_data(args))
    _connect(args, start_if_missing=True)
    service = spec.deploy(port=args.port, timeout_s=args.timeout_s)
    st = service.status()
    canary = f"{st.canary.uri} at {st.canary.percent:g}%" if st.canary else None
    _console.summary(f"service {st.name} is {st.status}", {
        "url": st.url, "infer": f"{st.url}/v2/models/{st.name}/infer",
        "stable": f"{st.stable.uri} at {st.stable.percent:g}%", "canary": canary,
        "replicas": st.replicas, "status": f"raymlp serve status {st.name}",
        **_console.where_to_look()})
    print(st.url)
    return 0


def _print_status(st) -> None:
    print(json.dumps(dataclasses.asdict(st), indent=2))


def _show(args: argparse.Namespace) -> int:
    """status, promote and rollback: act on the service, print its state as JSON."""
    from raymlp import serve

    _connect(args, start_if_missing=False)
    service = serve.get(args.name)
    action = {"status": service.status, "promote": service.promote,
              "rollback": service.rollback}
    _print_status(action[args.serve_command]())
    return 0


def _delete(args: argparse.Namespace) -> int:
    from raymlp import serve

    _connect(args, start_if_missing=False)
    serve.get(args.name).delete()
    print(f"deleted {args.name}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from raymlp import serve

    _connect(args, start_if_missing=False)
    for name in serve.list_services():
        st = serve.get(name).status()
        canary = f" canary={st.canary.uri}@{st.canary.percent:g}%" if st.canary else ""
        print(f"{name}\t{st.status}\t{st.url}\tstable={st.stable.uri}{canary}")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from raymlp._spec import json_schema
    from raymlp.serve import InferenceService

    print(json.dumps(json_schema(InferenceService, title="raymlp InferenceService"), indent=2))
    return 0
