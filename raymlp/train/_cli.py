"""``raymlp train``: run a training job described in a YAML/JSON file or by a Python entry point.

A job file holds :class:`~raymlp.train.TrainJob`'s fields (nested ``scaling`` and
``checkpointing`` too), read by :func:`raymlp._spec.from_data` with the same checks as the
Python API, plus the file-only ``register`` key. ``raymlp train schema`` prints its JSON Schema.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from raymlp import _spec
from raymlp._util import apply_overrides, load_object, parse_key_values, read_data_file
from raymlp.errors import SpecError

EXAMPLE = """\
example job file (YAML or JSON; `raymlp train schema` prints its JSON Schema):
  name: digits
  loop: examples/train_digits.py:digits_loop   # or package.module:function
  framework: torch
  scaling: {workers: 2, cpus: 1}
  config: {lr: 0.003, hidden: 64, batch_size: 32, epochs: 10}
  checkpointing: {every: 1, keep: 2, score: val_accuracy, mode: max}
  max_failures: 1
  data_hash: 3f1c...          # digest of the training data: recorded as an MLflow dataset input
  register: {name: digits, alias: champion}   # file only: register the model afterwards

Every TrainJob field can be given but `datasets` (Ray Datasets exist only in Python).
--set KEY=VALUE overrides a field (dotted keys reach nested ones: --set scaling.workers=4);
a KEY that is no TrainJob field sets a config entry (--set lr=0.1 is --set config.lr=0.1).
"""

# Keys a job file may hold besides TrainJob's fields.
_FILE_ONLY = ("register",)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="run a distributed training job",
        description="Run a training job from a YAML/JSON file, or from --loop. "
                    "`raymlp train schema` prints the job file's JSON Schema.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", help="job file (YAML or JSON), or `schema`")
    p.add_argument("--loop", help="the training loop: path/to/file.py:function or module:function")
    p.add_argument("--framework", help="torch, tensorflow, xgboost, generic")
    p.add_argument("--workers", type=int, help="number of workers (scaling.workers)")
    p.add_argument("--gpus", "--gpus-per-worker", dest="gpus", type=float,
                   help="GPUs per worker (scaling.gpus)")
    p.add_argument("--config", help="the loop's config as a JSON object")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a job field (dotted: scaling.workers=4) or, for any other KEY, a "
                        "config entry (lr=0.1); values are read as YAML")
    p.add_argument("--name", help="job name")
    p.add_argument("--timeout-s", type=float, help="stop the job after this many seconds")
    p.add_argument("--register", metavar="NAME[@ALIAS]", help="register the model afterwards")
    p.set_defaults(func=_run)


def schema() -> dict[str, Any]:
    """The JSON Schema of a job file: TrainJob's fields (without ``datasets``) and ``register``."""
    from raymlp.train import TrainJob
    from raymlp.train._spec import FRAMEWORKS, PLACEMENT_STRATEGIES

    out = _spec.json_schema(TrainJob, title="raymlp train job file")
    props = out["properties"]
    props.pop("datasets", None)
    props["framework"]["enum"] = list(FRAMEWORKS)
    out["$defs"]["Scaling"]["properties"]["placement_strategy"]["enum"] = list(PLACEMENT_STRATEGIES)
    out["$defs"]["Checkpointing"]["properties"]["mode"]["enum"] = ["max", "min"]
    props["register"] = {
        "description": "register the final model afterwards: NAME[@ALIAS] or {name, alias}",
        "anyOf": [
            {"type": "string"},
            {"type": "object", "properties": {"name": {"type": "string"},
                                              "alias": {"type": ["string", "null"]}},
             "required": ["name"], "additionalProperties": False},
        ],
    }
    return out


def _load_backend(value: Any) -> Any:
    """A torch backend name as it is; ``module:Class`` (a generic Backend) loaded and built."""
    from raymlp.train._spec import TORCH_BACKENDS

    if not isinstance(value, str) or value in TORCH_BACKENDS:
        return value
    obj = load_object(value, field="TrainJob.backend")
    return obj() if isinstance(obj, type) else obj


def _no_datasets(value: Any) -> Any:
    raise SpecError("TrainJob.datasets cannot be given in a job file: it holds Ray Datasets, "
                    "which exist only in Python; build the job with raymlp.train.TrainJob",
                    field="TrainJob.datasets", value=value, allowed="nothing in a job file")


_CONVERT = {"loop": lambda ref: load_object(ref, field="TrainJob.loop"),
            "backend": _load_backend, "datasets": _no_datasets}


def job_from_args(args: argparse.Namespace):
    """Build (TrainJob, register target) from a job file, flags and ``--set``; flags win."""
    from raymlp.train import TrainJob

    data = read_data_file(args.file, what="job file") if args.file else {}
    flags: dict[str, Any] = {}
    for key in ("loop", "framework", "name", "register"):
        if getattr(args, key):
            flags[key] = getattr(args, key)
    if args.workers is not None:
        flags["scaling.workers"] = args.workers
    if args.gpus is not None:
        flags["scaling.gpus"] = args.gpus
    if args.config:
        try:
            extra = json.loads(args.config)
        except ValueError as exc:
            raise SpecError(f"--config must be a JSON object: {exc}", field="--config",
                            value=args.config, allowed="a JSON object") from exc
        flags.update({f"config.{k}": v for k, v in _spec.mapping("--config", extra).items()})
    fields = {f.name for f in dataclasses.fields(TrainJob)} | set(_FILE_ONLY)
    for key, value in parse_key_values(args.set).items():
        # A key that is no job field is a config entry: `--set lr=0.1` as in earlier versions.
        flags[key if key.split(".")[0] in fields else f"config.{key}"] = value
    data = apply_overrides(data, flags)
    if "loop" not in data:
        raise SpecError("a job needs a loop: give a job file or --loop", field="TrainJob.loop",
                        value=None, allowed="'path/to/file.py:function' or 'module:function'")
    reg = _register_target(data.pop("register", None))
    return _spec.from_data(TrainJob, data, convert=_CONVERT), reg


def _register_target(reg: Any) -> dict[str, Any] | None:
    if reg is None:
        return None
    if isinstance(reg, str):
        name, _, alias = reg.partition("@")
        reg = {"name": name, "alias": alias or None}
    allowed = "NAME[@ALIAS] or a mapping {name: NAME, alias: ALIAS}"
    if not isinstance(reg, dict) or set(reg) - {"name", "alias"}:
        raise _spec.fail("register", reg, allowed)
    _spec.string("register.name", reg.get("name"))
    _spec.string("register.alias", reg.get("alias"), optional=True)
    return reg


def _run(args: argparse.Namespace) -> int:
    if args.file == "schema":
        print(json.dumps(schema(), indent=2))
        return 0
    job, reg = job_from_args(args)
    result = job.run(timeout_s=args.timeout_s)
    summary = {"run_id": result.run_id, "model_uri": result.model_uri, "metrics": result.metrics,
               "epochs": len(result.history)}
    if reg:
        version = result.register(reg["name"], alias=reg.get("alias"))
        summary["registered"] = f"models:/{reg['name']}/{version.version}"
    sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
    return 0
