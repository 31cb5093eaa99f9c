"""Building a pipeline's graph, KFP style: tasks, output references, conditions, loops, exit
handlers, nested pipelines; the graph's checks (all at definition time)."""

from __future__ import annotations

import copy
import inspect
import threading
import typing
from collections.abc import Callable, Mapping
from typing import Any

from raymlp.errors import SpecError
from raymlp.pipelines import _types
from raymlp.pipelines._component import SINGLE_OUTPUT, Component

__all__ = ["Collected", "Condition", "Elif", "Else", "ExitHandler", "If", "ParallelFor",
           "Task", "build_graph", "current_builder"]

ROOT = "root"
_local = threading.local()


def current_builder() -> _Builder | None:
    """The graph being built on this thread, or None."""
    stack = getattr(_local, "builders", None)
    return stack[-1] if stack else None


# --- references -----------------------------------------------------------------------------------

class _Ref:
    """A value known when the pipeline runs: comparisons build :class:`Condition`\\ s."""

    type_name = "any"

    def spec(self) -> dict:
        raise NotImplementedError

    def _cmp(self, op: str, other: Any) -> Condition:
        return Condition(self, op, other)

    def __gt__(self, other): return self._cmp(">", other)
    def __ge__(self, other): return self._cmp(">=", other)
    def __lt__(self, other): return self._cmp("<", other)
    def __le__(self, other): return self._cmp("<=", other)
    def __eq__(self, other): return self._cmp("==", other)  # type: ignore[override]
    def __ne__(self, other): return self._cmp("!=", other)  # type: ignore[override]
    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        raise SpecError(f"{self!r} has no value while the pipeline is built: use it as a step "
                        "input or in If(...), not in Python's if/and/or", field=repr(self),
                        value=None, allowed="If(ref > value)")


class OutputRef(_Ref):
    """``task.outputs["name"]``: an output of a step."""

    def __init__(self, task: Task, output: str):
        self.task = task
        self.output = output
        meta = task.component_outputs[output]
        self.kind = meta["kind"]
        self.type_name = meta["type"]

    def __repr__(self) -> str:
        return f"{self.task.name}.outputs[{self.output!r}]"

    def spec(self) -> dict:
        return {"task": self.task.name, "output": self.output}


class ParamRef(_Ref):
    """A pipeline parameter."""

    kind = "param"

    def __init__(self, name: str, type_name: str):
        self.name = name
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"params[{self.name!r}]"

    def spec(self) -> dict:
        return {"param": self.name}


class LoopItem(_Ref):
    """The current item of a :class:`ParallelFor` (``item["key"]`` for a field of it)."""

    kind = "param"

    def __init__(self, loop: str, key: str | None = None):
        self.loop = loop
        self.key = key

    def __getitem__(self, key: str) -> LoopItem:
        return LoopItem(self.loop, key)

    def __repr__(self) -> str:
        return f"{self.loop}.item" + (f"[{self.key!r}]" if self.key else "")

    def spec(self) -> dict:
        return {"item": self.loop, "key": self.key}


class Collected(_Ref):
    """``Collected(task.output)``: the outputs of a step inside a :class:`ParallelFor`, as a
    list in item order, for a step after the loop (fan-in)."""

    kind = "param"
    type_name = "list"

    def __init__(self, ref: OutputRef):
        if not isinstance(ref, OutputRef):
            raise SpecError(f"Collected takes a step's output (task.output), got {ref!r}",
                            field="Collected", value=ref, allowed="task.output")
        if ref.kind != "param":
            raise SpecError(f"Collected({ref!r}): only value outputs can be collected",
                            field="Collected", value=ref, allowed="a value output")
        self.ref = ref

    def __repr__(self) -> str:
        return f"Collected({self.ref!r})"

    def spec(self) -> dict:
        return {"collected": self.ref.spec()}


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}


class Condition:
    """``left OP right`` on values known at run time (``ev.outputs["acc"] > 0.85``)."""

    def __init__(self, left: Any, op: str, right: Any):
        self.left, self.op, self.right = left, op, right

    def __repr__(self) -> str:
        return f"{self.left!r} {self.op} {self.right!r}"

    def __bool__(self) -> bool:
        raise SpecError(f"{self!r} is decided when the pipeline runs: write `with If(...):`",
                        field=repr(self), value=None, allowed="with If(condition)")

    def refs(self) -> list[_Ref]:
        return [x for x in (self.left, self.right) if isinstance(x, _Ref)]


def evaluate(op: str, left: Any, right: Any) -> bool:
    return bool(_OPS[op](left, right))


# --- tasks ----------------------------------------------------------------------------------------

class Task:
    """A step of a pipeline being built: what calling a component returns.

    Attributes:
        name: the step name (unique in the pipeline).
        output: the single output (the return value, or the only output artifact).
        outputs: every output by name.
    """

    def __init__(self, builder: _Builder, name: str, component: Component | None,
                 inputs: dict, group: str, outputs_meta: dict):
        self._builder = builder
        self.name = name
        self.component = component
        self.inputs = inputs
        self.group = group
        self.component_outputs = outputs_meta
        self.after_names: list[str] = []
        self.overrides: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Task({self.name!r})"

    @property
    def outputs(self) -> dict[str, OutputRef]:
        return {name: OutputRef(self, name) for name in self.component_outputs}

    @property
    def output(self) -> OutputRef:
        names = list(self.component_outputs)
        if len(names) != 1:
            raise SpecError(f"step {self.name!r} has {len(names)} outputs {names}: use "
                            "task.outputs[name]", field=f"{self.name}.output", value=names,
                            allowed="exactly one output")
        return OutputRef(self, names[0])

    def after(self, *tasks: Task) -> Task:
        """Run after ``tasks`` even without a data dependency on them."""
        for t in tasks:
            if not isinstance(t, Task):
                raise SpecError(f"{self.name}.after takes tasks, got {t!r}",
                                field=f"{self.name}.after", value=t, allowed="a Task")
            self.after_names.append(t.name)
        return self

    def set_options(self, **options: Any) -> Task:
        """Override this step's component options (``cpus``, ``retries``, ``cache``, ...)."""
        from raymlp.pipelines._component import ComponentOptions

        merged = {**vars(self.component.options), **self.overrides, **options}
        ComponentOptions(**merged)  # validates, naming the field
        self.overrides.update(options)
        return self


class _PipelineTask(Task):
    """A nested pipeline's call: its outputs are the inner pipeline's returned references."""

    def __init__(self, name: str, refs: dict[str, _Ref]):
        self.name = name
        self._refs = refs

    @property
    def outputs(self) -> dict[str, _Ref]:  # type: ignore[override]
        return dict(self._refs)

    @property
    def output(self) -> _Ref:  # type: ignore[override]
        if len(self._refs) != 1:
            raise SpecError(f"pipeline step {self.name!r} returns {list(self._refs)}: use "
                            "task.outputs[name]", field=f"{self.name}.output",
                            value=list(self._refs), allowed="exactly one output")
        return next(iter(self._refs.values()))


# --- groups (control flow) ------------------------------------------------------------------------

class _Group:
    kind = "group"

    def __init__(self) -> None:
        self.id = ""
        self.builder: _Builder | None = None

    def spec(self) -> dict:
        return {}

    def __enter__(self):
        builder = current_builder()
        if builder is None:
            raise SpecError(f"{type(self).__name__} is used inside a @pipeline function",
                            field=type(self).__name__, value=None, allowed="inside a pipeline")
        self.builder = builder
        builder.open_group(self)
        return self._entered()

    def _entered(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.builder.close_group(self)


class If(_Group):
    """Run the steps inside only when ``condition`` holds (KFP's ``dsl.If``).

    Example:
        >>> with If(ev.outputs["test_accuracy"] > 0.85):
        ...     deploy(model=tr.outputs["model"])
        >>> with Else():
        ...     alert()
    """

    kind = "condition"

    def __init__(self, condition: Condition):
        super().__init__()
        if not isinstance(condition, Condition):
            raise SpecError(f"If takes a comparison of a step output or parameter, got "
                            f"{condition!r}", field="If", value=condition,
                            allowed="ref > value, ref == value, ...")
        self.condition = condition
        self.terms: list[tuple[Condition, bool]] = []

    def _chain(self, builder: _Builder) -> None:
        self.terms = [(self.condition, True)]
        builder.set_chain([self.condition])

    def spec(self) -> dict:
        return {"conditions": [{"left": _value_spec(c.left), "op": c.op,
                                "right": _value_spec(c.right), "expect": expect}
                               for c, expect in self.terms]}


class Elif(If):
    """Run when every earlier branch of the chain was false and ``condition`` holds."""

    def _chain(self, builder: _Builder) -> None:
        chain = builder.chain()
        if not chain:
            raise SpecError("Elif must follow an If or Elif block", field="Elif",
                            value=self.condition, allowed="right after an If or Elif block")
        self.terms = [(c, False) for c in chain] + [(self.condition, True)]
        builder.set_chain([*chain, self.condition])


class Else(If):
    """Run when every earlier branch of the chain was false."""

    def __init__(self) -> None:
        _Group.__init__(self)
        self.condition = None  # type: ignore[assignment]
        self.terms = []

    def _chain(self, builder: _Builder) -> None:
        chain = builder.chain()
        if not chain:
            raise SpecError("Else must follow an If or Elif block", field="Else", value=None,
                            allowed="right after an If or Elif block")
        self.terms = [(c, False) for c in chain]
        builder.set_chain([])


class ParallelFor(_Group):
    """Run the steps inside once per item, at most ``parallelism`` items at once.

    ``items`` is a list, a pipeline parameter or a step's list output; the ``with`` gives the
    current item (``item["key"]`` for a field of a dict item). Fan in after the loop with
    :class:`Collected`.

    Example:
        >>> with ParallelFor(list(range(20)), parallelism=4) as x:
        ...     sq = square(x=x)
        >>> total(values=Collected(sq.output))
    """

    kind = "loop"

    def __init__(self, items: Any, parallelism: int | None = None):
        super().__init__()
        from raymlp import _spec

        if not isinstance(items, (list, tuple, _Ref)):
            raise _spec.fail("ParallelFor.items", items, "a list, a pipeline parameter or a "
                             "step output")
        _spec.integer("ParallelFor.parallelism", parallelism, minimum=1, optional=True)
        self.items = list(items) if isinstance(items, tuple) else items
        self.parallelism = parallelism

    def _entered(self):
        return LoopItem(self.id)

    def spec(self) -> dict:
        return {"items": _value_spec(self.items), "parallelism": self.parallelism}


class ExitHandler(_Group):
    """Run ``exit_task`` after every step inside has finished, whatever happened; a component
    input annotated :class:`~raymlp.pipelines.PipelineTaskFinalStatus` sees the outcome.

    Example:
        >>> notify = record_outcome()
        >>> with ExitHandler(notify):
        ...     train(...)
    """

    kind = "exit"

    def __init__(self, exit_task: Task):
        super().__init__()
        if not isinstance(exit_task, Task) or isinstance(exit_task, _PipelineTask):
            raise SpecError(f"ExitHandler takes a step, got {exit_task!r}",
                            field="ExitHandler", value=exit_task, allowed="a Task")
        self.exit_task = exit_task

    def spec(self) -> dict:
        return {"exit_task": self.exit_task.name}


def _value_spec(value: Any) -> dict:
    if isinstance(value, _Ref):
        return value.spec()
    return {"value": value}


# --- the builder ----------------------------------------------------------------------------------

class _Builder:
    def __init__(self, name: str):
        self.name = name
        self.tasks: dict[str, Task] = {}
        self.groups: dict[str, dict] = {ROOT: {"kind": "root", "parent": None}}
        self.stack: list[str] = [ROOT]
        self.prefix: list[str] = []
        # The conditions of the If/Elif chain just closed, and the group it sits in.
        self.last_chain: tuple[str, list[Condition]] = (ROOT, [])
        self.counter = 0
        self.prefixes: set[str] = set()  # names taken by nested pipelines

    def chain(self) -> list[Condition]:
        gid, conds = self.last_chain
        return conds if gid == self.stack[-1] else []

    def set_chain(self, conds: list[Condition]) -> None:
        self.last_chain = (self.stack[-1], conds)

    def break_chain(self) -> None:
        if self.last_chain[0] == self.stack[-1]:
            self.last_chain = (self.stack[-1], [])

    # groups
    def open_group(self, group: _Group) -> None:
        self.counter += 1
        group.id = f"{group.kind}-{self.counter}"
        if isinstance(group, If):
            group._chain(self)
            for cond in [c for c, _ in group.terms]:
                for ref in cond.refs():
                    self._check_ref(ref, where=f"If({cond!r})", field="condition")
        else:
            self.break_chain()
        if isinstance(group, ParallelFor) and isinstance(group.items, _Ref):
            self._check_ref(group.items, where="ParallelFor", field="items")
        entry = {"kind": group.kind, "parent": self.stack[-1], **group.spec()}
        if isinstance(group, ExitHandler):
            exit_task = group.exit_task
            exit_task.group = self.stack[-1]
            entry["exit_task"] = exit_task.name
        self.groups[group.id] = entry
        self.stack.append(group.id)

    def close_group(self, group: _Group) -> None:
        self.stack.pop()
        if not isinstance(group, If):
            self.break_chain()

    def group_chain(self, gid: str) -> list[str]:
        out = []
        while gid is not None:
            out.append(gid)
            gid = self.groups[gid]["parent"]
        return out[::-1]

    # tasks
    def unique(self, base: str) -> str:
        base = ".".join([*self.prefix, base])
        name, n = base, 1
        while name in self.tasks or name in self.prefixes:
            n += 1
            name = f"{base}-{n}"
        return name

    def add_task(self, comp: Component, kwargs: Mapping[str, Any]) -> Task:
        self.break_chain()
        name = self.unique(comp.name)
        inputs: dict[str, dict] = {}
        for arg in kwargs:
            if arg not in comp.inputs:
                allowed = sorted(comp.inputs)
                raise SpecError(f"step {name!r}: unknown input {arg!r}; {comp.name} takes "
                                f"{allowed}", field=f"{name}.{arg}", value=kwargs[arg],
                                allowed=f"one of {allowed}")
        for arg, meta in comp.inputs.items():
            field = f"{name}.{arg}"
            if meta["kind"] == "status":
                inputs[arg] = {"status": True}
                continue
            if arg not in kwargs:
                if "default" in meta:
                    continue
                raise SpecError(f"step {name!r}: missing input {arg!r} ({meta['type']})",
                                field=field, value=None, allowed=f"a {meta['type']} value")
            value = kwargs[arg]
            if isinstance(value, Task):
                value = value.output
            if isinstance(value, _Ref):
                self._check_ref(value, where=f"step {name!r}", field=field)
                produced_kind = getattr(value, "kind", "param")
                if produced_kind != meta["kind"]:
                    raise SpecError(f"step {name!r}: input {arg!r} takes a {meta['kind']} "
                                    f"({meta['type']}) but {value!r} is a {produced_kind}",
                                    field=field, value=repr(value),
                                    allowed=f"a {meta['type']} {meta['kind']}")
                if not _types.compatible(value.type_name, meta["type"]):
                    raise SpecError(f"step {name!r}: input {arg!r} takes {meta['type']} but "
                                    f"{value!r} is {value.type_name}", field=field,
                                    value=repr(value), allowed=meta["type"])
                inputs[arg] = value.spec()
            else:
                if meta["kind"] == "artifact":
                    raise SpecError(f"step {name!r}: input {arg!r} is an artifact "
                                    f"({meta['type']}): pass a step's output", field=field,
                                    value=value, allowed=f"an Output[{meta['type']}] of a step")
                if not _types.check_value(meta["type"], value):
                    raise SpecError(f"step {name!r}: input {arg!r} takes {meta['type']}, got "
                                    f"{value!r}", field=field, value=value, allowed=meta["type"])
                inputs[arg] = {"value": value}
        task = Task(self, name, comp, inputs, self.stack[-1], comp.outputs)
        self.tasks[name] = task
        return task

    def _check_ref(self, ref: _Ref, *, where: str, field: str) -> None:
        """A reference is usable here: its producer runs whenever this point runs."""
        here = self.group_chain(self.stack[-1])
        if isinstance(ref, LoopItem):
            if ref.loop not in here:
                raise SpecError(f"{where}: {field} reads the item of a ParallelFor it is not "
                                "inside", field=field, value=repr(ref),
                                allowed="the item inside its loop")
            return
        if isinstance(ref, Collected):
            producer = self.tasks.get(ref.ref.task.name)
            loops = [g for g in self.group_chain(producer.group)
                     if self.groups[g]["kind"] == "loop" and g not in here]
            if not loops:
                raise SpecError(f"{where}: {field} collects {ref.ref!r}, which is not inside "
                                "a ParallelFor outside this point", field=field,
                                value=repr(ref), allowed="Collected(output of a loop step)")
            self._check_chain(ref.ref, [g for g in self.group_chain(producer.group)
                                        if g not in loops], here, where, field,
                              allow_outer_loops=True, collected=loops)
            return
        if isinstance(ref, OutputRef):
            producer = ref.task
            if producer.name not in self.tasks:
                raise SpecError(f"{where}: {field} reads {ref!r}, a step of another pipeline",
                                field=field, value=repr(ref), allowed="a step of this pipeline")
            self._check_chain(ref, self.group_chain(producer.group), here, where, field)

    def _check_chain(self, ref, producer_chain, here, where, field, *,
                     allow_outer_loops=False, collected=()) -> None:
        for gid in producer_chain:
            if gid in here:
                continue
            if gid in collected:
                continue
            kind = self.groups[gid]["kind"]
            if kind == "condition":
                raise SpecError(f"{where}: {field} reads {ref!r} from inside a condition "
                                "branch that may not run; read it inside the same branch",
                                field=field, value=repr(ref),
                                allowed="an output of a step that always runs before it")
            if kind == "loop":
                raise SpecError(f"{where}: {field} reads {ref!r} from inside a ParallelFor; "
                                "fan in with Collected(...)", field=field, value=repr(ref),
                                allowed="Collected(output)")

    def check_cycles(self) -> list[str]:
        """The steps in a dependency order; a cycle is a :class:`SpecError` naming a step."""
        deps = {name: set(task_deps(self.graph_tasks(), name)) for name in self.tasks}
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(n: str, path: list[str]) -> None:
            if state.get(n) == 2:
                return
            if state.get(n) == 1:
                cycle = path[path.index(n):] + [n]
                raise SpecError(f"step {n!r} depends on itself: {' -> '.join(cycle)}",
                                field=f"{n}.after", value=cycle, allowed="an acyclic graph")
            state[n] = 1
            for d in sorted(deps[n]):
                if d not in deps:
                    raise SpecError(f"step {n!r} runs after {d!r}, which is no step of this "
                                    "pipeline", field=f"{n}.after", value=d,
                                    allowed=f"one of {sorted(deps)}")
                visit(d, [*path, n])
            state[n] = 2
            order.append(n)

        for n in self.tasks:
            visit(n, [])
        return order

    def graph_tasks(self) -> dict[str, dict]:
        out = {}
        for name, t in self.tasks.items():
            out[name] = {"component": t.component.name, "inputs": t.inputs,
                         "after": list(t.after_names), "group": t.group,
                         "options": dict(t.overrides)}
        # an exit task depends on every step in its handler (it runs once they are done)
        for gid, g in self.groups.items():
            if g["kind"] == "exit":
                inside = [n for n, t in self.tasks.items() if gid in self.group_chain(t.group)]
                out[g["exit_task"]]["exit_of"] = gid
                out[g["exit_task"]]["after"] = sorted(set(out[g["exit_task"]]["after"]) |
                                                      set(inside))
        return out


def input_deps(spec: Mapping[str, Any]) -> list[str]:
    """The steps an input spec reads."""
    if "task" in spec:
        return [spec["task"]]
    if "collected" in spec:
        return [spec["collected"]["task"]]
    return []


def task_deps(tasks: Mapping[str, Mapping], name: str) -> list[str]:
    t = tasks[name]
    out = list(t.get("after", []))
    for spec in t["inputs"].values():
        out.extend(input_deps(spec))
    return out


def pipeline_params(func: Callable) -> dict[str, dict]:
    """A pipeline function's parameters: ``{name: {"type", "default"?}}``."""
    hints = typing.get_type_hints(func)
    out: dict[str, dict] = {}
    for pname, param in inspect.signature(func).parameters.items():
        hint = hints.get(pname, Any)
        try:
            kind, tname, _ = _types.describe_type(hint)
        except TypeError as exc:
            raise SpecError(f"pipeline {func.__name__!r}: parameter {pname!r}: {exc}",
                            field=f"{func.__name__}.{pname}", value=hint,
                            allowed="a parameter type") from None
        if kind != "param":
            raise SpecError(f"pipeline {func.__name__!r}: parameter {pname!r} must be a value",
                            field=f"{func.__name__}.{pname}", value=hint,
                            allowed="str, int, float, bool, list or dict")
        entry: dict[str, Any] = {"type": tname}
        if param.default is not inspect.Parameter.empty:
            entry["default"] = param.default
        out[pname] = entry
    return out


def build_graph(name: str, func: Callable) -> tuple[dict, dict[str, Component]]:
    """Call the pipeline function with parameter references and record its graph.

    Returns:
        ``(graph, components)``: the graph as plain data (params, tasks, groups, outputs) and
        the components its steps use, by name.

    Raises:
        SpecError: a bad graph (cycle, missing input, type mismatch, a read from a branch
            that may not run), naming the step and the input.
    """
    params = pipeline_params(func)
    builder = _Builder(name)
    stack = getattr(_local, "builders", None)
    if stack is None:
        stack = _local.builders = []
    stack.append(builder)
    try:
        returned = func(**{p: ParamRef(p, meta["type"]) for p, meta in params.items()})
    finally:
        stack.pop()
    builder.check_cycles()
    components: dict[str, Component] = {}
    for t in builder.tasks.values():
        seen = components.get(t.component.name)
        if seen is not None and seen is not t.component and seen.code_hash != t.component.code_hash:
            raise SpecError(f"two different components are called {t.component.name!r}",
                            field=t.name, value=t.component.name,
                            allowed="one component per name")
        components[t.component.name] = t.component
    graph = {"name": name, "params": params, "tasks": builder.graph_tasks(),
             "groups": copy.deepcopy(builder.groups), "outputs": _returned(name, returned)}
    return graph, components


def _returned(name: str, returned: Any) -> dict[str, dict]:
    if returned is None:
        return {}
    if isinstance(returned, Task):
        returned = returned.output
    if isinstance(returned, _Ref):
        return {SINGLE_OUTPUT: returned.spec()}
    if isinstance(returned, Mapping):
        return {str(k): _value_spec(v.output if isinstance(v, Task) else v)
                for k, v in returned.items()}
    if isinstance(returned, tuple) and hasattr(returned, "_fields"):
        return {f: _value_spec(getattr(returned, f)) for f in returned._fields}
    raise SpecError(f"pipeline {name!r} returns {returned!r}: return a step output or a dict "
                    "of them", field=f"{name}.return", value=returned,
                    allowed="a task output or a dict of outputs")


def inline(pipeline_name: str, func: Callable, kwargs: Mapping[str, Any]) -> _PipelineTask:
    """A pipeline called inside another: its steps join the outer graph (named
    ``inner.step``), its returned references become the call's outputs."""
    builder = current_builder()
    params = pipeline_params(func)
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise SpecError(f"pipeline step {pipeline_name!r}: unknown input {unknown[0]!r}",
                        field=f"{pipeline_name}.{unknown[0]}", value=kwargs[unknown[0]],
                        allowed=f"one of {sorted(params)}")
    args = {}
    for p, meta in params.items():
        if p in kwargs:
            v = kwargs[p]
            args[p] = v.output if isinstance(v, Task) else v
        elif "default" in meta:
            args[p] = meta["default"]
        else:
            raise SpecError(f"pipeline step {pipeline_name!r}: missing input {p!r}",
                            field=f"{pipeline_name}.{p}", value=None,
                            allowed=f"a {meta['type']} value")
    name = builder.unique(pipeline_name)
    builder.prefixes.add(name)
    builder.counter += 1
    gid = f"pipeline-{builder.counter}"
    builder.groups[gid] = {"kind": "pipeline", "parent": builder.stack[-1], "name": name}
    builder.stack.append(gid)
    builder.prefix.append(name)
    try:
        returned = func(**args)
    finally:
        builder.prefix.pop()
        builder.stack.pop()
    builder.break_chain()
    if returned is None:
        refs: dict[str, _Ref] = {}
    elif isinstance(returned, Task):
        refs = {SINGLE_OUTPUT: returned.output}
    elif isinstance(returned, _Ref):
        refs = {SINGLE_OUTPUT: returned}
    elif isinstance(returned, Mapping):
        refs = {str(k): (v.output if isinstance(v, Task) else v) for k, v in returned.items()}
    else:
        raise SpecError(f"nested pipeline {pipeline_name!r} returns {returned!r}",
                        field=f"{pipeline_name}.return", value=returned,
                        allowed="a task output or a dict of outputs")
    return _PipelineTask(name, refs)
