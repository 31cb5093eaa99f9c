"""Definition-time checks, compile/load and versions, and the DAG semantics in local mode
(no Ray: each step runs in this process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from raymlp import pipelines
from raymlp.errors import SpecError
from raymlp.pipelines import (
    Collected,
    Dataset,
    If,
    Input,
    Output,
    ParallelFor,
    component,
    pipeline,
)
from tests.pipelines import flows


@component
def make(n: int, data: Output[Dataset]) -> int:
    return n


@component
def use(data: Input[Dataset], k: int = 1) -> str:
    return "x"


@component
def needs_int(x: int) -> int:
    return x


@component
def needs_str(s: str) -> str:
    return s


def count(log: Path, name: str) -> int:
    path = log / name
    return len(path.read_text().splitlines()) if path.exists() else 0


# --- acceptance 9: bad graphs and parameters fail at definition or submission time ----------

def test_missing_input_names_step_and_input():
    with pytest.raises(SpecError) as err:
        @pipeline(name="bad")
        def bad():
            use()
    assert err.value.field == "use.data" and "missing input 'data'" in str(err.value)


def test_type_mismatch_names_step_and_input():
    with pytest.raises(SpecError) as err:
        @pipeline(name="bad")
        def bad():
            s = needs_str(s="a")
            needs_int(x=s.output)
    assert err.value.field == "needs_int.x" and "takes int" in str(err.value)
    with pytest.raises(SpecError) as err:
        @pipeline(name="bad")
        def bad2():
            m = make(n=1)
            needs_int(x=m.outputs["data"])
    assert err.value.field == "needs_int.x"
    with pytest.raises(SpecError, match="takes int, got 'three'"):
        @pipeline(name="bad")
        def bad3():
            needs_int(x="three")


def test_read_from_branch_that_may_not_run():
    with pytest.raises(SpecError) as err:
        @pipeline(name="bad")
        def bad(n: int = 1):
            with If(needs_int(x=n).output > 0):
                m = make(n=n)
            use(data=m.outputs["data"])
    assert err.value.field == "use.data" and "may not run" in str(err.value)


def test_loop_output_needs_collected():
    with pytest.raises(SpecError, match="Collected"):
        @pipeline(name="bad")
        def bad():
            with ParallelFor([1, 2]) as x:
                t = needs_int(x=x)
            needs_int(x=t.output)

    @pipeline(name="good")
    def good():
        with ParallelFor([1, 2]) as x:
            t = needs_int(x=x)
        flows.collect(values=Collected(t.output))
    assert "collect" in good.graph["tasks"]


def test_cycle_names_the_step():
    with pytest.raises(SpecError) as err:
        @pipeline(name="bad")
        def bad():
            a = needs_int(x=1)
            b = needs_int(x=a.output)
            a.after(b)
    assert "depends on itself" in str(err.value) and err.value.field.endswith(".after")


def test_bad_parameters_fail_before_any_step(tmp_path):
    with pytest.raises(SpecError) as err:
        flows.cached.run({"n": "four", "log": str(tmp_path)}, mode="local")
    assert err.value.field == "cached.params.n"
    with pytest.raises(SpecError) as err:
        flows.cached.run({"nope": 1}, mode="local")
    assert err.value.field == "cached.params.nope"
    with pytest.raises(SpecError):
        flows.cached.run({}, mode="sideways")
    assert count(tmp_path, "write_data") == 0
    with pytest.raises(SpecError, match="component.retries"):
        component(retries=-1)(needs_int.func)


def test_component_is_still_a_function():
    assert needs_int(x=3) == 3
    assert flows.collect(values=[1, 2]) == [1, 2]


# --- acceptance 6: compile -> load in a fresh process; the version hash ------------------------

def test_compile_load_runs_without_the_module(tmp_path):
    path = pipelines.compile(flows.branchy, tmp_path / "p.yaml")
    here = flows.branchy.run({"log": str(tmp_path), "n": 5}, mode="local", track=False,
                             progress=False)
    script = textwrap.dedent(f"""
        import sys
        from raymlp import pipelines
        p = pipelines.load({str(path)!r})
        assert "tests.pipelines" not in sys.modules
        r = p.run({{"log": {str(tmp_path)!r}, "n": 5}}, mode="local", cache=False, track=False,
                  progress=False)
        print(p.version, r.status, sorted((k, v.status, v.outputs.get("Output"))
                                          for k, v in r.steps.items()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    expected = sorted((k, v.status if v.status != "CACHED" else "SUCCEEDED",
                       v.outputs.get("Output")) for k, v in here.steps.items())
    assert out.stdout.split()[0] == flows.branchy.version
    assert out.stdout.strip().split(" ", 2)[2] == str(expected)


def test_version_changes_with_code_only(tmp_path):
    def module(body: str) -> str:
        return textwrap.dedent(f"""
            from raymlp.pipelines import component, pipeline

            @component
            def step(x: int) -> int:
                return {body}

            @pipeline(name="versioned")
            def versioned(x: int = 1):
                step(x=x)
        """)

    versions = []
    for i, body in enumerate(("x + 1", "x + 1", "x + 2")):
        f = tmp_path / f"v{i}.py"
        f.write_text(module(body))
        from raymlp._util import load_object

        versions.append(load_object(f"{f}:versioned").version)
    assert versions[0] == versions[1] != versions[2]


# --- control flow and caching, in process (acceptance 3 and 2, and 8's local mode) ------------

def test_if_elif_else_local(tmp_path):
    picked = {}
    for n, want in ((10, "big"), (5, "medium"), (2, "small")):
        run = flows.branchy.run({"n": n, "log": str(tmp_path)}, mode="local", track=False,
                                progress=False)
        assert run.status == "SUCCEEDED"
        ran = [s.outputs["Output"] for k, s in run.steps.items() if k.startswith("echo")
               and s.status in ("SUCCEEDED", "CACHED")]
        skipped = [k for k, s in run.steps.items() if s.status == "SKIPPED"]
        picked[n] = ran
        assert ran == [want] and len(skipped) == 2
    assert picked == {10: ["big"], 5: ["medium"], 2: ["small"]}


def test_nested_pipeline_local(tmp_path):
    run = flows.outer.run({"n": 5, "log": str(tmp_path)}, mode="local", track=False,
                          progress=False)
    assert run.status == "SUCCEEDED"
    assert run.outputs == {"first": 10.0, "second": 21.0}
    assert {"inner.write_data", "inner.total", "inner-2.write_data", "inner-2.total"} == \
        set(run.steps)


def test_cache_hits_misses_and_expiry_local(tmp_path):
    log = str(tmp_path)
    first = flows.cached.run({"log": log}, mode="local", track=False, progress=False)
    second = flows.cached.run({"log": log}, mode="local", track=False, progress=False)
    assert {s.status for s in first.steps.values()} == {"SUCCEEDED"}
    assert {s.status for s in second.steps.values()} == {"CACHED"}
    assert second.outputs == first.outputs
    # one parameter changed: only the step it feeds reruns
    third = flows.cached.run({"log": log, "scale": 2.0}, mode="local", track=False,
                             progress=False)
    assert third.steps["write_data"].status == "CACHED"
    assert third.steps["total"].status == "SUCCEEDED"
    # same artifact name, different content: a miss downstream
    fourth = flows.cached.run({"log": log, "n": 5}, mode="local", track=False, progress=False)
    assert [fourth.steps[k].status for k in ("write_data", "total")] == ["SUCCEEDED"] * 2
    assert fourth.steps["write_data"].artifacts["data"]["digest"] != \
        first.steps["write_data"].artifacts["data"]["digest"]
    # cache=False per run
    fifth = flows.cached.run({"log": log}, mode="local", cache=False, track=False,
                             progress=False)
    assert {s.status for s in fifth.steps.values()} == {"SUCCEEDED"}
    assert count(tmp_path, "write_data") == 3 and count(tmp_path, "total") == 4


def test_max_age_makes_entry_stale(tmp_path):
    @component(max_age_s=1)
    def short_lived(x: int, log: str) -> int:
        import os

        with open(os.path.join(log, "short_lived"), "a") as fh:
            fh.write("x\n")
        return x

    @pipeline(name="aging")
    def aging(log: str = "/tmp"):
        short_lived(x=1, log=log)

    kw = {"mode": "local", "track": False, "progress": False}
    assert aging.run({"log": str(tmp_path)}, **kw).steps["short_lived"].status == "SUCCEEDED"
    assert aging.run({"log": str(tmp_path)}, **kw).steps["short_lived"].status == "CACHED"
    time.sleep(1.2)
    assert aging.run({"log": str(tmp_path)}, **kw).steps["short_lived"].status == "SUCCEEDED"
    assert count(tmp_path, "short_lived") == 2


def test_graph_text_shows_status(tmp_path):
    run = flows.branchy.run({"n": 10, "log": str(tmp_path)}, mode="local", track=False,
                            progress=False)
    text = run.graph()
    assert text.startswith("flowchart TD") and "echo (if) [SUCCEEDED]" in text \
        and "[SKIPPED]" in text and "-->" in text
    assert "digraph" in run.graph("dot") and "SKIPPED" in run._repr_html_()


def test_after_orders_steps_and_set_options_checks(tmp_path):
    @pipeline(name="ordered")
    def ordered(log: str = "/tmp"):
        b = flows.echo(text="b", log=log)
        a = flows.echo(text="a", log=log)
        b.after(a)
        a.set_options(retries=1, cache=False)
        with pytest.raises(SpecError, match="component.cpus"):
            a.set_options(cpus=-1)

    assert ordered.graph["tasks"]["echo"]["after"] == ["echo-2"]
    assert ordered.graph["tasks"]["echo-2"]["options"] == {"retries": 1, "cache": False}
    run = ordered.run({"log": str(tmp_path)}, mode="local", track=False, progress=False)
    assert run.status == "SUCCEEDED"
    assert run.state["steps"]["echo-2"]["ended_at"] <= run.state["steps"]["echo"]["started_at"]
