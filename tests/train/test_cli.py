"""`raymlp train` runs a job described in a YAML file, on the session's Ray instance."""

from __future__ import annotations

import json

import pytest

from raymlp import cli, tracking
from tests.conftest import REPO

pytestmark = [pytest.mark.slow]


def test_train_command_runs_a_yaml_job_and_registers_the_model(ray_session, tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(f"""
name: cli-regression
loop: {REPO / 'examples' / 'custom_backend.py'}:regression_loop
framework: torch
scaling: {{workers: 2}}
config: {{epochs: 5}}
register: {{name: cli-model, alias: champion}}
""")
    assert cli.main(["train", str(job), "--set", "epochs=12"]) == 0
    summary = _last_json(capsys)
    assert summary["epochs"] == 12  # --set overrides the file
    assert summary["registered"] == "models:/cli-model/1"
    run = tracking.get_run(summary["run_id"])
    assert run.data.params["epochs"] == "12"
    assert tracking.get_version("cli-model", alias="champion").run_id == summary["run_id"]


def _last_json(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.index("{\n"):])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("loop: nowhere.py:fn\n", "does not exist"),
        ("loop: json:nothing_here\n", "has no function 'nothing_here'"),
        ("loop: json:dumps\nworkers: 2\n", "unknown field(s) ['workers']"),
        ("loop: json:dumps\nscaling: {workers: 0}\n", "Scaling.workers must be an integer >= 1"),
        ("- just\n- a list\n", "must hold a mapping"),
    ],
)
def test_bad_job_files_exit_2_with_the_field_named(tmp_path, capsys, content, message):
    job = tmp_path / "job.yaml"
    job.write_text(content)
    assert cli.main(["train", str(job)]) == 2
    assert message in capsys.readouterr().err
