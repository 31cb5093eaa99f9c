"""The ``raymlp pipeline`` subcommands: run, compile, runs, status, resume, graph, schedule,
lineage. A pipeline is named ``module:attr``, ``path/file.py:attr`` or a compiled ``p.yaml``.
On a cluster, the driver is a Ray job: ``raymlp submit ... -- raymlp pipeline run ...``.
Exit codes: 0 success, 1 a run that failed, 2 bad input (a :class:`RaymlpError`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``pipeline`` and its actions to the ``raymlp`` command."""
    p = subparsers.add_parser("pipeline", help="run, compile, resume and schedule pipelines "
                                               "(Kubeflow Pipelines' DSL on Ray)")
    sub = p.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)

    run = sub.add_parser("run", help="run a pipeline to its end; prints the run id")
    run.add_argument("pipeline", help="module:attr, file.py:attr or a compiled p.yaml")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                     help="a pipeline parameter (repeatable)")
    run.add_argument("--local", action="store_true", help="run the steps in this process")
    run.add_argument("--no-cache", action="store_true", help="rerun every step")
    run.set_defaults(func=_run)

    comp = sub.add_parser("compile", help="write the portable spec (YAML)")
    comp.add_argument("pipeline")
    comp.add_argument("output", metavar="p.yaml")
    comp.set_defaults(func=_compile)

    runs = sub.add_parser("runs", help="list recorded runs, newest first")
    runs.add_argument("--pipeline", help="only runs of this pipeline")
    runs.add_argument("--limit", type=int, default=20)
    runs.set_defaults(func=_runs)

    status = sub.add_parser("status", help="a run's status, per step")
    status.add_argument("run_id", metavar="RUN")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    resume = sub.add_parser("resume", help="rerun only the steps that failed or never ran")
    resume.add_argument("run_id", metavar="RUN")
    resume.add_argument("--pipeline", help="the (fixed) code: module:attr or file.py:attr")
    resume.add_argument("--local", action="store_true")
    resume.set_defaults(func=_resume)

    graph = sub.add_parser("graph", help="print the DAG (of a pipeline, or a run with status)")
    graph.add_argument("target", help="a pipeline reference, a p.yaml, or a run id")
    graph.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    graph.set_defaults(func=_graph)

    lineage = sub.add_parser("lineage", help="walk a registered model back to its data")
    lineage.add_argument("model_uri", metavar="MODEL_URI", help="models:/NAME/VERSION or "
                                                                "models:/NAME@ALIAS")
    lineage.set_defaults(func=_lineage)

    sched = sub.add_parser("schedule", help="recurring runs on the Ray cluster")
    ssub = sched.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)
    create = ssub.add_parser("create", help="create (or replace) a schedule")
    create.add_argument("name")
    create.add_argument("pipeline")
    when = create.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="a cron expression, UTC ('0 3 * * *')")
    when.add_argument("--interval-s", type=float, help="seconds between runs")
    create.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    create.add_argument("--max-concurrency", type=int, default=1)
    create.add_argument("--catchup", action="store_true")
    create.add_argument("--paused", action="store_true", help="create it disabled")
    create.set_defaults(func=_schedule_create)
    for action, helptext in (("list", "list schedules"), ("pause", "stop firing"),
                             ("resume", "fire again"), ("delete", "remove a schedule")):
        a = ssub.add_parser(action, help=helptext)
        if action != "list":
            a.add_argument("name")
        a.set_defaults(func=_schedule_action, action=action)
    for parser in ssub.choices.values():
        parser.add_argument("--address", help="the Ray cluster (default: RAYMLP_RAY_ADDRESS, "
                                              "RAY_ADDRESS or raymlp's managed local head)")


def _load(ref: str):
    from raymlp.pipelines._schedule import _load_pipeline

    return _load_pipeline(ref)


def _run(args: argparse.Namespace) -> int:
    from raymlp._util import parse_key_values

    pipe = _load(args.pipeline)
    run = pipe.run(parse_key_values(args.param, field="--param"),
                   mode="local" if args.local else "ray", cache=not args.no_cache)
    print(run.id)
    return 0 if run.status == "SUCCEEDED" else 1


def _compile(args: argparse.Namespace) -> int:
    from raymlp.pipelines import compile

    pipe = _load(args.pipeline)
    path = compile(pipe, args.output)
    print(f"wrote {path} (pipeline {pipe.name}, version {pipe.version})")
    return 0


def _runs(args: argparse.Namespace) -> int:
    from raymlp.pipelines import list_runs

    for run in list_runs(args.pipeline)[:args.limit]:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.state.get("started_at", 0)))
        counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(run.counts().items()))
        print(f"{run.id}  {run.status:<9}  {started}  version {run.version}  {counts}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from raymlp.pipelines import get_run

    run = get_run(args.run_id)
    if args.json:
        print(json.dumps({"id": run.id, "status": run.status, "version": run.version,
                          "steps": {n: s.status for n, s in run.steps.items()},
                          "outputs": run.outputs}, default=repr))
        return 0
    print(f"{run.id}: {run.status} (pipeline {run.name}, version {run.version})")
    for name, step in run.steps.items():
        extra = step.error or (f"{step.duration_s:.2f} s" if step.duration_s else "")
        print(f"  {name:<30} {step.status:<9} {extra}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    from raymlp.pipelines import resume

    run = resume(args.run_id, args.pipeline, mode="local" if args.local else None)
    print(run.id)
    return 0 if run.status == "SUCCEEDED" else 1


def _graph(args: argparse.Namespace) -> int:
    from raymlp.pipelines._graph import render
    from raymlp.pipelines._store import load_run

    state = load_run(args.target) if ":" not in args.target and not args.target.endswith(
        (".yaml", ".yml")) else None
    if state is not None:
        print(render(state["spec"], format=args.format, steps=state["steps"]))
    else:
        print(render(_load(args.target).spec_dict(), format=args.format))
    return 0


def _lineage(args: argparse.Namespace) -> int:
    from raymlp.pipelines import lineage

    out = lineage(args.model_uri)
    model, pipe = out["model"], out["pipeline"]
    print(f"models:/{model['name']}/{model['version']} <- pipeline {pipe['name']} "
          f"(version {pipe['version']}) run {pipe['run_id']} [MLflow {pipe['mlflow_run_id']}]")
    print(f"  params: {json.dumps(pipe['params'], sort_keys=True)}")
    for step in out["steps"]:
        print(f"  <- step {step['step']} [MLflow {step['mlflow_run_id']}]"
              f"{' (cache hit)' if step['cache_hit'] else ''}")
        for name, digest in step["inputs"].items():
            print(f"       input  {name}: {digest}")
        for name, digest in step["outputs"].items():
            print(f"       output {name}: {digest}")
    for name, digest in out["data"].items():
        print(f"  data {name}: {digest}")
    return 0


def _schedule_create(args: argparse.Namespace) -> int:
    from raymlp import _local
    from raymlp._util import parse_key_values
    from raymlp.pipelines import Schedule

    spec = Schedule(name=args.name, pipeline=args.pipeline, cron=args.cron,
                    interval_s=args.interval_s, max_concurrency=args.max_concurrency,
                    catchup=args.catchup, enabled=not args.paused,
                    params=parse_key_values(args.param, field="--param"))
    address = _local.resolve_address(args.address, announce=lambda m: print(m, file=sys.stderr))
    spec.create(address=address)
    print(f"schedule {spec.name}: next runs at " + ", ".join(
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) for t in spec.next_fire_times(3)))
    return 0


def _schedule_action(args: argparse.Namespace) -> int:
    from raymlp import _local
    from raymlp.pipelines import ScheduleHandle, list_schedules

    address = _local.resolve_address(args.address, start_if_missing=False)
    if args.action == "list":
        for entry in list_schedules(address=address):
            spec = entry["spec"]
            every = spec.get("cron") or f"every {spec.get('interval_s'):g} s"
            state = "enabled" if entry["enabled"] else "paused"
            print(f"{entry['name']:<20} {state:<8} {every:<16} fired {entry['fired']:<5} "
                  f"active {len(entry['active'])}  {spec['pipeline']}")
        return 0
    handle = ScheduleHandle(args.name, address=address)
    {"pause": handle.pause, "resume": handle.resume, "delete": handle.delete}[args.action]()
    print(f"schedule {args.name}: {args.action}d" if args.action != "resume"
          else f"schedule {args.name}: resumed")
    return 0
