"""What raymlp.pipelines adds to the steps it runs: a chain of 20 trivial steps and a fan-out of
100 through a pipeline (steps as Ray tasks, MLflow tracking on) against the same functions called
directly, and a cache hit per step.

    python benchmarks/pipeline_overhead.py [--chain 20] [--fanout 100]

The last line is ``RESULT {"per_step_overhead_ms": ..., "cache_hit_ms": ..., "fanout_100_s": ...,
"fanout_direct_s": ..., "chain_ratio": ..., "fanout_ratio": ...}``:
per_step_overhead_ms = (chain wall through the pipeline - chain wall called directly) / steps;
cache_hit_ms = wall of the identical second run / steps; fanout_100_s = wall of the fan-out
through the pipeline, fanout_direct_s = the same tasks and fan-in called directly; the ratios
are pipeline wall / direct wall.
"""

from __future__ import annotations

import argparse
import json
import time

from raymlp.pipelines import Collected, ParallelFor, component, flush_tracking, pipeline


@component(cpus=0.25)
def inc(x: int) -> int:
    return x + 1


@component(cpus=0.25)
def total(values: list) -> int:
    return sum(values)


def build(chain: int, fanout: int):
    @pipeline(name="bench-chain")
    def bench_chain(start: int = 0):
        task = inc(x=start)
        for _ in range(chain - 1):
            task = inc(x=task.output)
        return task.output

    @pipeline(name="bench-fanout")
    def bench_fanout(start: int = 0):
        with ParallelFor(list(range(fanout))) as i:
            one = inc(x=i)
        return total(values=Collected(one.output)).output

    return bench_chain, bench_fanout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", type=int, default=20)
    parser.add_argument("--fanout", type=int, default=100)
    args = parser.parse_args()

    import ray

    import raymlp

    raymlp.init()
    bench_chain, bench_fanout = build(args.chain, args.fanout)
    # Warm up: Ray workers started (as many as the fan-out runs at once), modules imported, the
    # MLflow store created.
    bench_chain.run({"start": -1}, cache=False, progress=False)
    bench_fanout.run({"start": -1}, cache=False, progress=False)  # the fan-out's workers
    flush_tracking()

    direct = ray.remote(num_cpus=0.25)(inc.func)
    t0 = time.perf_counter()
    value = 0
    for _ in range(args.chain):
        value = ray.get(direct.remote(value))
    direct_s = time.perf_counter() - t0

    seed = int(time.time())  # a fresh start value: no cache entry can match
    t0 = time.perf_counter()
    run = bench_chain.run({"start": seed}, progress=False)
    chain_s = time.perf_counter() - t0
    assert run.outputs["Output"] == seed + args.chain, run.outputs
    t0 = time.perf_counter()
    hit = bench_chain.run({"start": seed}, progress=False)
    hit_s = time.perf_counter() - t0
    assert all(s.cache_hit for s in hit.steps.values())

    direct_total = ray.remote(num_cpus=0.25)(total.func)
    t0 = time.perf_counter()
    summed = ray.get(direct_total.remote(ray.get([direct.remote(i)
                                                  for i in range(args.fanout)])))
    fan_direct_s = time.perf_counter() - t0
    assert summed == sum(i + 1 for i in range(args.fanout))

    t0 = time.perf_counter()
    fan = bench_fanout.run({"start": seed}, cache=False, progress=False)
    fan_s = time.perf_counter() - t0
    assert fan.status == "SUCCEEDED", fan.error
    t0 = time.perf_counter()
    flush_tracking()
    flush_s = time.perf_counter() - t0

    per_step = (chain_s - direct_s) / args.chain * 1000
    print(f"chain of {args.chain}: direct Ray tasks {direct_s:.3f} s, pipeline {chain_s:.3f} s "
          f"({chain_s / args.chain * 1000:.1f} ms/step)")
    print(f"identical rerun (all cache hits): {hit_s:.3f} s")
    print(f"fan-out of {args.fanout} + fan-in: direct Ray tasks {fan_direct_s:.3f} s, pipeline "
          f"{fan_s:.3f} s; MLflow writes left after the runs: {flush_s:.3f} s (background thread)")
    print("RESULT " + json.dumps({"per_step_overhead_ms": round(per_step, 2),
                                  "cache_hit_ms": round(hit_s / args.chain * 1000, 2),
                                  "fanout_100_s": round(fan_s, 3),
                                  "fanout_direct_s": round(fan_direct_s, 3),
                                  "chain_ratio": round(chain_s / direct_s, 2),
                                  "fanout_ratio": round(fan_s / fan_direct_s, 2)}))


if __name__ == "__main__":
    main()
