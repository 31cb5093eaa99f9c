"""The generic backend hook runs a user's rendezvous in every worker before the loop."""

from __future__ import annotations

import pytest

from raymlp import tracking, train

pytestmark = [pytest.mark.slow]


def test_custom_backend_sets_up_collectives_for_the_loop(ray_session, examples_path):
    import custom_backend

    # A parent run, as a tuning study would hold: the job's run is nested under it, in the
    # parent's experiment.
    parent = tracking.start_run("custom-parent", experiment="custom-study")
    result = train.TrainJob(loop=custom_backend.regression_loop, framework="generic",
                            backend=custom_backend.RawCollectives(),
                            scaling=train.Scaling(workers=2), config={"epochs": 40},
                            name="custom").run(parent_run_id=parent.run_id)
    parent.end()
    assert len(result.history) == 40
    assert result.metrics["world_size"] == 2  # the process group spans both workers
    assert result.metrics["loss"] < result.history[0]["loss"] / 20
    assert tracking.get_run(result.run_id).data.params["raymlp.backend"] == "raw-gloo"
    assert [r.info.run_id for r in tracking.child_runs(parent.run_id)] == [result.run_id]
    assert result.flavor == "torch"  # the loop chose it in ctx.log_model
    weight = result.load_model().weight.item()
    assert abs(weight - 2.0) < 0.2
