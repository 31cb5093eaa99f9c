"""The ``raymlp cluster``, ``raymlp submit`` and ``raymlp jobs`` subcommands.

Exit codes: 0 success; 1 the thing checked or run failed (invalid manifests, a FAILED job);
2 bad input or an unreachable service (a :class:`RaymlpError`, mapped by ``raymlp.cli``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

KIND_CHOICES = ("RayCluster", "RayJob", "RayService")


def register(subparsers: Any) -> None:
    """Add ``cluster``, ``submit`` and ``jobs`` to the ``raymlp`` command."""
    _register_cluster(subparsers)
    _register_submit(subparsers)
    _register_jobs(subparsers)


# -- raymlp cluster -----------------------------------------------------------------------------


def _k8s_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig's, else 'default')")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context")


def _register_cluster(subparsers: Any) -> None:
    cluster = subparsers.add_parser(
        "cluster", help="render, validate and manage KubeRay resources (RayCluster, RayJob, RayService)"
    )
    sub = cluster.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)

    render = sub.add_parser("render", help="print the ray.io/v1 manifests of a spec file as YAML")
    render.add_argument(
        "spec",
        metavar="SPEC",
        help="FILE.py[:NAME] or module:NAME: a Python file defining RayClusterSpec/RayJobSpec/RayServiceSpec "
        "objects (all public module-level specs, or just NAME)",
    )
    render.set_defaults(func=_render)

    validate = sub.add_parser(
        "validate", help="validate every Ray resource in YAML files (other kinds are skipped)"
    )
    validate.add_argument("files", metavar="FILE", nargs="+")
    validate.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    validate.set_defaults(func=_validate)

    apply = sub.add_parser(
        "apply", help="validate, then create or update resources from YAML or a spec file (server-side apply: "
        "fields dropped from the file are removed on the cluster)")
    apply.add_argument("files", metavar="FILE", nargs="+",
                       help="YAML manifests, or FILE.py[:NAME] / module:NAME spec references")
    apply.add_argument("--dry-run", action="store_true",
                       help="have the API server check and default the resources without storing them")
    apply.add_argument("--force-conflicts", action="store_true",
                       help="take over fields another field manager owns instead of failing")
    _k8s_options(apply)
    apply.set_defaults(func=_apply)

    for action, helptext in (
        ("status", "print a resource's status"),
        ("wait", "wait until a RayCluster/RayService is ready or a RayJob has finished"),
        ("delete", "delete a resource"),
    ):
        p = sub.add_parser(action, help=helptext)
        p.add_argument("kind", metavar="KIND", choices=KIND_CHOICES, help=" | ".join(KIND_CHOICES))
        p.add_argument("name", metavar="NAME")
        _k8s_options(p)
        if action == "wait":
            p.add_argument("--timeout-s", "--timeout", dest="timeout", type=float, default=600.0,
                           help="seconds to wait (default 600)")
            p.add_argument("--poll-s", "--poll", dest="poll", type=float, default=2.0,
                           help="seconds between status reads")
        if action == "status":
            p.add_argument("-o", "--output", choices=("text", "json"), default="text")
        p.set_defaults(func={"status": _status, "wait": _wait, "delete": _delete}[action])

    docker = sub.add_parser(
        "dockerfile", help="print the image recipe: the rayproject/ray image of this Ray version with raymlp "
        "and exactly the requirements a shipped job installs (cluster/image/Dockerfile)")
    docker.add_argument("--extras", default="torch,s3", metavar="EXTRA,...",
                        help="raymlp extras to install (default: torch,s3)")
    docker.set_defaults(func=_dockerfile)

    logs = sub.add_parser("logs", help="print the logs of a RayJob's submitter pod")
    logs.add_argument("name", metavar="NAME")
    logs.add_argument("--tail", type=int, default=None, help="only the last N lines")
    _k8s_options(logs)
    logs.set_defaults(func=_k8s_logs)


def _render(args: argparse.Namespace) -> int:
    from raymlp.cluster._files import load_specs
    from raymlp.cluster._specs import to_yaml

    print(to_yaml(*[spec.render() for spec in load_specs(args.spec)]), end="")
    return 0


def _dockerfile(args: argparse.Namespace) -> int:
    from raymlp.cluster._ship import dockerfile

    print(dockerfile([e for e in args.extras.split(",") if e.strip()]), end="")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from raymlp.cluster._files import validate_file

    checked = bad = 0
    for path in args.files:
        for res in validate_file(path):
            where = f"{res.file}[{res.index}] {res.kind or '<no kind>'} {res.name or '<no name>'}"
            if not res.checked:
                if not args.quiet:
                    print(f"{where}: skipped (not a ray.io RayCluster/RayJob/RayService)")
                continue
            checked += 1
            if res.ok:
                if not args.quiet:
                    print(f"{where}: valid")
            else:
                bad += 1
                print(f"{where}: INVALID", file=sys.stderr)
                for issue in res.issues:
                    print(f"  {issue}", file=sys.stderr)
    summary = f"{checked} Ray resource(s) checked, {bad} invalid"
    print(summary, file=sys.stderr if bad else sys.stdout)
    return 1 if bad else 0


def _client(args: argparse.Namespace):
    from raymlp.cluster._client import KubeRayClient

    return KubeRayClient(namespace=args.namespace, kubeconfig=args.kubeconfig, context=args.context)


def _apply(args: argparse.Namespace) -> int:
    from raymlp.cluster._files import load_manifests, load_specs
    from raymlp.cluster._ship import upload_package
    from raymlp.cluster._validate import is_ray_resource

    manifests = []
    for target in args.files:
        if target.partition(":")[0].endswith(".py") or not target.endswith((".yaml", ".yml", ".json")):
            for spec in load_specs(target):
                manifests.append(spec.render())
                # The code the manifest refers to by URI (working dir, shipped raymlp) goes first.
                for folder, uri, wrap in getattr(spec, "uploads", list)():
                    if args.dry_run:
                        print(f"would upload {folder} to {uri}")
                    else:
                        upload_package(folder, uri, wrap=wrap)
                        print(f"uploaded {folder} to {uri}")
        else:
            docs = load_manifests(target)
            skipped = [d for d in docs if not is_ray_resource(d)]
            for d in skipped:
                kind = d.get("kind") if isinstance(d, dict) else None
                print(f"{target}: skipped {kind or 'a document'} (apply only handles Ray resources)")
            manifests += [d for d in docs if is_ray_resource(d)]
    client = _client(args)
    for manifest in manifests:
        print(client.apply(manifest, dry_run="All" if args.dry_run else False, force=args.force_conflicts))
    return 0


def _status(args: argparse.Namespace) -> int:
    st = _client(args).status(args.kind, args.name)
    if args.output == "json":
        print(json.dumps({"kind": st.kind, "name": st.name, "state": st.state, "jobStatus": st.job_status,
                          "ready": st.ready, "failed": st.failed, "reason": st.reason, "message": st.message,
                          "conditions": dict(st.conditions)}))
    else:
        print(_describe(st))
    return 1 if st.failed else 0


def _describe(st: Any) -> str:
    parts = [f"{st.kind} {st.name}: state={st.state or '-'}"]
    if st.kind == "RayJob":
        parts.append(f"jobStatus={st.job_status or '-'}")
    parts.append(f"ready={'yes' if st.ready else 'no'}")
    if st.conditions:
        parts.append("conditions=" + ",".join(f"{k}={v}" for k, v in sorted(st.conditions.items())))
    if st.reason or st.message:
        parts.append(f"reason={st.reason or '-'} message={st.message or '-'}")
    return " ".join(parts)


def _wait(args: argparse.Namespace) -> int:
    from raymlp.errors import JobError, KubernetesError, TimeoutError

    client = _client(args)
    try:
        st = client.wait(args.kind, args.name, timeout_s=args.timeout, poll_s=args.poll,
                         on_change=lambda s: print(_describe(s), flush=True))
    except (JobError, TimeoutError) as exc:
        print(f"raymlp: {exc}", file=sys.stderr)
        return 1
    except KubernetesError as exc:
        if exc.status is not None:  # the API call itself failed: exit 2 like other API errors
            raise
        print(f"raymlp: {exc}", file=sys.stderr)
        return 1
    return 0 if not st.failed else 1


def _delete(args: argparse.Namespace) -> int:
    existed = _client(args).delete(args.kind, args.name)
    print(f"{args.kind.lower()}.ray.io/{args.name} {'deleted' if existed else 'not found'}")
    return 0


def _k8s_logs(args: argparse.Namespace) -> int:
    print(_client(args).logs(args.name, tail_lines=args.tail), end="")
    return 0


# -- raymlp submit / jobs -------------------------------------------------------------------------


def _address_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="the Ray cluster: its GCS address HOST:PORT or ray://HOST:PORT (default: RAYMLP_RAY_ADDRESS / "
        "RAY_ADDRESS, else the local cluster of `raymlp up`); the job API is taken at HOST:8265. "
        "An http(s):// dashboard URL still works here and is used as it is",
    )
    p.add_argument(
        "--dashboard",
        default=None,
        metavar="URL",
        help="the cluster's dashboard / job API URL, e.g. http://HEAD:8265, when it is not on port 8265 of "
        "the --address host",
    )
    p.add_argument(
        "--token",
        default=None,
        help="the head's authentication token (Ray 2.60 heads have token authentication on by default); "
        "default RAYMLP_RAY_TOKEN / RAY_AUTH_TOKEN, else Ray's token file (RAY_AUTH_TOKEN_PATH, "
        "~/.ray/auth_token)",
    )


def _register_submit(subparsers: Any) -> None:
    submit = subparsers.add_parser(
        "submit",
        help="submit a job to a Ray head, stream its logs and exit with its status",
        description="raymlp submit [--address HOST:PORT] [--dashboard URL] [--working-dir DIR] [--pip PKG ...] "
        "-- ENTRYPOINT ...",
    )
    _address_option(submit)
    submit.add_argument("--working-dir", help="directory (or remote URI) uploaded as the job's working_dir")
    submit.add_argument("--pip", nargs="+", default=[], metavar="PKG", help="further pip packages for the job")
    submit.add_argument(
        "--runtime", choices=("auto", "ship", "image"), default="auto",
        help="how the job gets raymlp: 'ship' uploads this raymlp package and installs its requirements "
        "(from its package metadata) for the job, for a stock rayproject/ray image; 'image' when the "
        "cluster's image has raymlp (cluster/image/Dockerfile); 'auto' (default): 'image' on the "
        "managed local head of `raymlp up`, else 'ship'")
    submit.add_argument(
        "--extras", default=None, metavar="EXTRA,...",
        help="raymlp extras the job uses, shipped with it (default: torch, plus s3 for an s3:// "
        "RAYMLP_STORAGE_ROOT); '' for none")
    submit.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="job environment variable")
    submit.add_argument("--submission-id", help="a job id of your choosing")
    submit.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
    submit.add_argument("--timeout-s", "--timeout", dest="timeout", type=float, default=None,
                        help="seconds to wait for the job to finish (it keeps running after)")
    submit.add_argument("entrypoint", nargs=argparse.REMAINDER, metavar="-- ENTRYPOINT")
    submit.set_defaults(func=_submit)


def _resolve_address(args: argparse.Namespace) -> str:
    from raymlp.cluster._submit import dashboard_url

    return dashboard_url(args.address, dashboard=args.dashboard)


def _submit(args: argparse.Namespace) -> int:
    from raymlp._util import parse_key_values
    from raymlp.cluster._submit import connect, follow_job, log_tail, submit_job
    from raymlp.errors import ConfigError, TimeoutError

    entry = list(args.entrypoint)
    if entry and entry[0] == "--":
        entry = entry[1:]
    if not entry:
        raise ConfigError("no entrypoint: give the command after '--', e.g. raymlp submit --address HOST:PORT -- "
                          "python train.py")
    from raymlp import _config, _local
    from raymlp.cluster._submit import local_store_warning

    env = parse_key_values(args.env, field="--env", raw=True)
    url = _resolve_address(args)
    client = connect(url, token=args.token)
    head = _local.current()
    on_local_head = head is not None and head.dashboard_url == url  # this environment: has raymlp
    runtime = args.runtime
    if runtime == "auto":
        runtime = "image" if on_local_head else "ship"
    extras = None if args.extras is None else [e for e in args.extras.split(",") if e.strip()]
    job_id = submit_job(client, entry, working_dir=args.working_dir, pip=args.pip, env_vars=env,
                        submission_id=args.submission_id, runtime=runtime, extras=extras)
    warning = local_store_warning({**_config.explicit_env(), **env})
    if warning and not on_local_head:  # on this machine's own head, local stores are fine
        print(f"raymlp: warning: {warning}", file=sys.stderr, flush=True)
    print(f"raymlp: submitted job {job_id}", file=sys.stderr, flush=True)
    if args.no_wait:
        print(job_id)
        return 0
    try:
        status = follow_job(client, job_id, timeout_s=args.timeout)
    except TimeoutError as exc:
        print(f"raymlp: {exc}", file=sys.stderr)
        return 1
    print(f"raymlp: job {job_id} {status}", file=sys.stderr)
    if status != "SUCCEEDED":
        info = client.get_job_info(job_id)
        if info.message:
            print(f"raymlp: {info.message}", file=sys.stderr)
        print(f"raymlp: last lines of the job's log:\n{log_tail(client, job_id)}", file=sys.stderr)
        return 1
    return 0


def _register_jobs(subparsers: Any) -> None:
    jobs = subparsers.add_parser("jobs", help="list, inspect, read logs of and stop jobs on a Ray head")
    sub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="list the head's jobs")
    _address_option(p)
    p.set_defaults(func=_jobs_list)
    for action, helptext in (("status", "print a job's status"), ("logs", "print a job's logs"),
                             ("stop", "stop a running job")):
        p = sub.add_parser(action, help=helptext)
        p.add_argument("job_id", metavar="JOB_ID")
        _address_option(p)
        if action == "logs":
            p.add_argument("-f", "--follow", action="store_true", help="stream until the job ends")
        p.set_defaults(func={"status": _jobs_status, "logs": _jobs_logs, "stop": _jobs_stop}[action])


def _jobs_client(args: argparse.Namespace):
    from raymlp.cluster._submit import connect

    return connect(_resolve_address(args), token=args.token)


def _sdk(what: str, fn: Any, *a: Any) -> Any:
    from raymlp.errors import JobError

    try:
        return fn(*a)
    except RuntimeError as exc:  # the SDK raises RuntimeError for HTTP errors (e.g. unknown id)
        raise JobError(f"{what} failed: {exc}") from exc


def _jobs_list(args: argparse.Namespace) -> int:
    rows = sorted(_jobs_client(args).list_jobs(), key=lambda j: j.start_time or 0)
    print(f"{'SUBMISSION_ID':<28} {'STATUS':<10} ENTRYPOINT")
    for job in rows:
        print(f"{job.submission_id or job.job_id or '-':<28} {job.status.value!s:<10} {job.entrypoint}")
    return 0


def _jobs_status(args: argparse.Namespace) -> int:
    info = _sdk(f"job {args.job_id}", _jobs_client(args).get_job_info, args.job_id)
    status = str(info.status.value)
    print(f"{args.job_id}: {status}" + (f" ({info.message})" if info.message else ""))
    return 1 if status in ("FAILED", "STOPPED") else 0


def _jobs_logs(args: argparse.Namespace) -> int:
    client = _jobs_client(args)
    if args.follow:
        from raymlp.cluster._submit import follow_job

        status = follow_job(client, args.job_id)
        return 0 if status == "SUCCEEDED" else 1
    print(_sdk(f"logs of job {args.job_id}", client.get_job_logs, args.job_id), end="")
    return 0


def _jobs_stop(args: argparse.Namespace) -> int:
    stopped = _sdk(f"stop job {args.job_id}", _jobs_client(args).stop_job, args.job_id)
    print(f"{args.job_id}: {'stop requested' if stopped else 'not running'}")
    return 0
