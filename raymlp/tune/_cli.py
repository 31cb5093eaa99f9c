"""``raymlp tune``: run, watch, list and resume tuning experiments.

``raymlp tune run FILE`` reads an experiment file with Katib's field names (see
:mod:`raymlp.tune._file`), checked like the Python spec; ``--set`` overrides a field;
``raymlp tune schema`` prints the file's JSON Schema.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from raymlp import _spec
from raymlp._util import apply_overrides, parse_key_values, read_data_file

EXAMPLE = """\
example experiment file (Katib's field names; `trial` replaces Katib's trialTemplate):
  name: digits-lr
  trial: examples/tune_digits.py:trial        # or package.module:function
  objective:
    type: minimize                             # or maximize
    objectiveMetricName: val_loss
    goal: 0.05                                 # optional: reaching it ends the experiment
    additionalMetricNames: [val_accuracy]
  algorithm:
    algorithmName: asha                        # random, grid, bayesianoptimization, tpe, gp,
    algorithmSettings:                         # cmaes, sobol, hyperband, asha, bohb, pbt
      - {name: max_t, value: "8"}
  parallelTrialCount: 2
  maxTrialCount: 12
  maxFailedTrialCount: 3
  parameters:
    - {name: lr, parameterType: double, feasibleSpace: {min: "0.0001", max: "0.1", distribution: logUniform}}
    - {name: hidden, parameterType: categorical, feasibleSpace: {list: [32, 64, 128]}}
  constants: {epochs: 8}                       # fixed config entries
  seed: 0
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tune", help="hyperparameter tuning experiments (Katib-style files)",
        description="Run, inspect and resume hyperparameter tuning experiments.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="tune_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run an experiment file")
    run.add_argument("file", help="experiment file (YAML or JSON)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="set a field (dotted: objective.goal=0.1); values are read as YAML")
    run.add_argument("--fresh", action="store_true",
                     help="start afresh even if an unfinished experiment of this name exists")
    run.add_argument("--timeout-s", type=float, help="end the experiment after this many seconds")
    run.set_defaults(func=_run)
    status = sub.add_parser("status", help="where an experiment stands")
    status.add_argument("name")
    status.set_defaults(func=_status)
    ls = sub.add_parser("list", help="the experiments on record")
    ls.set_defaults(func=_list)
    resume = sub.add_parser("resume", help="continue an experiment (after a crash, or with "
                                           "more trials)")
    resume.add_argument("name")
    resume.add_argument("--max-trials", type=int, help="a new total number of trials")
    resume.add_argument("--timeout-s", type=float)
    resume.set_defaults(func=_resume)
    schema = sub.add_parser("schema", help="print the experiment file's JSON Schema")
    schema.set_defaults(func=lambda args: print(json.dumps(file_schema(), indent=2)) or 0)


def file_schema() -> dict[str, Any]:
    from raymlp.tune._file import ExperimentFile

    return _spec.json_schema(ExperimentFile, title="raymlp tune experiment file")


def experiment_from_file(path: str, overrides: list[str] = ()):
    from raymlp.tune._file import read

    data = apply_overrides(read_data_file(path, what="experiment file"),
                           parse_key_values(overrides))
    return read(data)


def _run(args: argparse.Namespace) -> int:
    exp = experiment_from_file(args.file, args.set)
    result = exp.run(resume=False if args.fresh else None, timeout_s=args.timeout_s)
    _print({"name": result.name, "stop_reason": result.stop_reason, "run_id": result.run_id,
            "trials": len(result.all_trials),
            "best": None if result.best is None else {
                "params": result.best.params, "value": result.best.value,
                "run_id": result.best.run_id, "model_uri": result.best.model_uri}})
    return 0


def _status(args: argparse.Namespace) -> int:
    from raymlp.tune import status

    _print(status(args.name))
    return 0


def _list(args: argparse.Namespace) -> int:
    from raymlp.tune import experiments

    rows = experiments()
    if not rows:
        print("no experiments on record")
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        best = r["best"]["value"] if r["best"] else None
        print(f"{r['name'].ljust(width)}  {r['status']:<8}  {r['trials']}/{r['max_trials']} "
              f"trials  best={best if best is None else f'{best:.4g}'}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    from raymlp.tune import resume

    result = resume(args.name, max_trials=args.max_trials, timeout_s=args.timeout_s)
    _print({"name": result.name, "stop_reason": result.stop_reason,
            "trials": len(result.all_trials)})
    return 0


def _print(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
