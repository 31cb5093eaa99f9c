"""Components and pipelines the pipeline tests run (self-contained, as compiled ones must be).

Steps that the tests count append a line to ``<log>/<name>`` each time they execute.
"""

from __future__ import annotations

from typing import NamedTuple

from raymlp.pipelines import (
    Collected,
    Dataset,
    Elif,
    Else,
    ExitHandler,
    If,
    Input,
    Output,
    ParallelFor,
    PipelineTaskFinalStatus,
    component,
    pipeline,
)


@component(cpus=0.5)
def write_data(n: int, log: str, data: Output[Dataset]) -> NamedTuple(
        "Outputs", [("rows", int), ("first", int)]):
    import os
    import time

    with open(os.path.join(log, "write_data"), "a") as fh:
        fh.write(f"{time.time()}\n")
    with open(data.path, "w") as fh:
        fh.write("\n".join(str(i) for i in range(n)))
    return n, 0


@component(cpus=0.5)
def total(data: Input[Dataset], scale: float, log: str) -> float:
    import os
    import time

    with open(os.path.join(log, "total"), "a") as fh:
        fh.write(f"{time.time()}\n")
    return sum(float(x) for x in open(data.path).read().split()) * scale


@component(cpus=0.5)
def echo(text: str, log: str) -> str:
    import os

    with open(os.path.join(log, f"echo-{text}"), "a") as fh:
        fh.write("x\n")
    return text


@component(cpus=0.5)
def timed_square(x: int, log: str) -> int:
    import json
    import os
    import time

    start = time.time()
    time.sleep(0.3)
    with open(os.path.join(log, f"square-{x}.json"), "w") as fh:
        json.dump({"start": start, "end": time.time()}, fh)
    return x * x


@component(cpus=0)
def collect(values: list) -> list:
    return list(values)


@component(cpus=0, retries=2, backoff_s=0.1)
def always_fails(x: int, log: str) -> int:
    import os

    with open(os.path.join(log, "always_fails"), "a") as fh:
        fh.write("x\n")
    raise ValueError(f"boom {x}")


@component(cpus=0, cache=False)
def outcome(status: PipelineTaskFinalStatus, log: str) -> str:
    import os

    with open(os.path.join(log, "outcome"), "w") as fh:
        fh.write(f"{status.state}|{status.error_message}")
    return status.state


@pipeline(name="branchy")
def branchy(n: int = 10, log: str = "/tmp"):
    w = write_data(n=n, log=log)
    with If(w.outputs["rows"] > 8):
        echo(text="big", log=log)
    with Elif(w.outputs["rows"] > 3):
        echo(text="medium", log=log)
    with Else():
        echo(text="small", log=log)


@pipeline(name="fan")
def fan(log: str = "/tmp"):
    with ParallelFor(list(range(20)), parallelism=4) as x:
        sq = timed_square(x=x, log=log)
    return collect(values=Collected(sq.output)).output


@pipeline(name="fails-with-exit")
def fails_with_exit(log: str = "/tmp"):
    done = outcome(log=log)
    with ExitHandler(done):
        w = write_data(n=3, log=log)
        always_fails(x=w.outputs["rows"], log=log)


@pipeline(name="inner")
def inner(n: int, log: str):
    w = write_data(n=n, log=log)
    return total(data=w.outputs["data"], scale=1.0, log=log)


@pipeline(name="outer")
def outer(n: int = 5, log: str = "/tmp"):
    first = inner(n=n, log=log)
    second = inner(n=7, log=log)
    return {"first": first.output, "second": second.output}


@pipeline(name="cached")
def cached(n: int = 4, scale: float = 1.0, log: str = "/tmp"):
    w = write_data(n=n, log=log)
    t = total(data=w.outputs["data"], scale=scale, log=log)
    return t.output
