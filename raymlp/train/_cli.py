"""``raymlp train``: run a training job described in a YAML/JSON file or by a Python entry point."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from raymlp.errors import SpecError

_JOB_KEYS = {"loop", "framework", "scaling", "config", "checkpointing", "max_failures", "name",
             "experiment", "storage", "flavor", "tags", "register", "backend"}

EXAMPLE = """\
example job file (YAML or JSON):
  name: digits
  loop: examples/train_digits.py:digits_loop   # or package.module:function
  framework: torch
  scaling: {workers: 2, cpus_per_worker: 1}
  config: {lr: 0.003, hidden: 64, batch_size: 32, epochs: 10}
  checkpointing: {every: 1, keep: 2}
  max_failures: 1
  register: {name: digits, alias: champion}
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="run a distributed training job",
        description="Run a training job from a YAML/JSON file, or from --loop.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", help="job file (YAML or JSON)")
    p.add_argument("--loop", help="the training loop: path/to/file.py:function or module:function")
    p.add_argument("--framework", help="torch, tensorflow, xgboost")
    p.add_argument("--workers", type=int, help="number of workers")
    p.add_argument("--gpus-per-worker", type=float, help="GPUs per worker")
    p.add_argument("--config", help="the loop's config as a JSON object")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set one config entry (value parsed as JSON when it can be)")
    p.add_argument("--name", help="job name")
    p.add_argument("--register", metavar="NAME[@ALIAS]", help="register the model afterwards")
    p.set_defaults(func=_run)


def load_loop(ref: str):
    """Resolve ``path/to/file.py:function`` or ``package.module:function``."""
    if not isinstance(ref, str) or ":" not in ref:
        raise SpecError(f"loop must be 'path/to/file.py:function' or 'module:function', got {ref!r}",
                        field="loop", value=ref)
    target, _, func = ref.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise SpecError(f"loop file {target!r} does not exist", field="loop", value=ref)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        sys.path.insert(0, str(path.parent.resolve()))
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise SpecError(f"cannot import loop module {target!r}: {exc}", field="loop",
                            value=ref) from exc
    try:
        return getattr(module, func)
    except AttributeError:
        raise SpecError(f"{target!r} has no function {func!r}", field="loop", value=ref) from None


def _read_file(path: str) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SpecError(f"job file {path!r} does not exist", field="file", value=path)
    try:
        data = json.loads(p.read_text()) if p.suffix == ".json" else yaml.safe_load(p.read_text())
    except (ValueError, yaml.YAMLError) as exc:
        raise SpecError(f"job file {path!r} is not valid {p.suffix or 'YAML'}: {exc}",
                        field="file", value=path) from exc
    if not isinstance(data, dict):
        raise SpecError(f"job file {path!r} must hold a mapping of job fields", field="file",
                        value=path)
    unknown = sorted(set(data) - _JOB_KEYS)
    if unknown:
        raise SpecError(f"job file {path!r}: unknown field(s) {unknown}; allowed: {sorted(_JOB_KEYS)}",
                        field=unknown[0], value=data[unknown[0]])
    return data


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def job_from_args(args: argparse.Namespace):
    """Build (TrainJob, register target) from a job file and/or flags; flags win."""
    from raymlp.train import Checkpointing, Scaling, TrainJob

    data = _read_file(args.file) if args.file else {}
    if args.loop:
        data["loop"] = args.loop
    if "loop" not in data:
        raise SpecError("a job needs a loop: give a job file or --loop", field="loop", value=None)
    for flag in ("framework", "name", "register"):
        if getattr(args, flag):
            data[flag] = getattr(args, flag)
    scaling = dict(data.get("scaling") or {})
    if args.workers is not None:
        scaling["workers"] = args.workers
    if args.gpus_per_worker is not None:
        scaling["gpus_per_worker"] = args.gpus_per_worker
    config = dict(data.get("config") or {})
    if args.config:
        config.update(json.loads(args.config))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SpecError(f"--set takes KEY=VALUE, got {item!r}", field="--set", value=item)
        config[key] = _parse_value(value)
    try:
        job = TrainJob(
            loop=load_loop(data["loop"]), framework=data.get("framework", "torch"),
            scaling=Scaling(**scaling), config=config,
            checkpointing=Checkpointing(**(data.get("checkpointing") or {})),
            max_failures=data.get("max_failures", 0), name=data.get("name", "train"),
            experiment=data.get("experiment"), storage=data.get("storage"),
            flavor=data.get("flavor"), tags=data.get("tags") or {}, backend=data.get("backend"))
    except TypeError as exc:  # unknown keyword in scaling / checkpointing
        raise SpecError(f"invalid job field: {exc}", field="scaling/checkpointing") from exc
    reg = data.get("register")
    if isinstance(reg, str):
        name, _, alias = reg.partition("@")
        reg = {"name": name, "alias": alias or None}
    return job, reg


def _run(args: argparse.Namespace) -> int:
    job, reg = job_from_args(args)
    result = job.run()
    summary = {"run_id": result.run_id, "model_uri": result.model_uri, "metrics": result.metrics,
               "epochs": len(result.history)}
    if reg:
        version = result.register(reg["name"], alias=reg.get("alias"))
        summary["registered"] = f"models:/{reg['name']}/{version.version}"
    print(json.dumps(summary, indent=2, default=str))
    return 0
