"""`raymlp train` runs a job described in a YAML file, on the session's Ray instance."""

from __future__ import annotations

import json

import pytest

from raymlp import cli, tracking
from tests.conftest import REPO

JOB_FILES = sorted((REPO / "examples").glob("*job*.yaml"))


@pytest.mark.slow
def test_train_command_runs_a_yaml_job_and_registers_the_model(ray_session, tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(f"""
name: cli-regression
loop: {REPO / 'examples' / 'custom_backend.py'}:regression_loop
framework: torch
scaling: {{workers: 1}}
config: {{epochs: 5}}
data_hash: 0123abcd
data_name: line
register: {{name: cli-model, alias: champion}}
""")
    assert cli.main(["train", str(job), "--set", "epochs=12", "--set", "scaling.workers=2"]) == 0
    summary = _last_json(capsys)
    assert summary["epochs"] == 12  # --set of a non-field key overrides the file's config
    version = tracking.get_version("cli-model", alias="champion")
    assert summary["registered"] == f"models:/cli-model/{version.version}"
    assert version.run_id == summary["run_id"]
    run = tracking.get_run(summary["run_id"])
    assert run.data.params["epochs"] == "12"
    assert run.data.params["raymlp.workers"] == "2"  # dotted --set reaches nested fields
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["line"]


def _last_json(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.rindex("\n{\n") + 1:])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("loop: nowhere.py:fn\n", "does not exist"),
        ("loop: json:nothing_here\n", "has no attribute 'nothing_here'"),
        ("loop: json:dumps\nworkers: 2\n", "unknown field 'workers'"),
        ("loop: json:dumps\nscaling: {workers: 0}\n", "Scaling.workers must be an integer >= 1"),
        ("loop: json:dumps\nscaling: {workers: two}\n", "TrainJob.scaling.workers must be"),
        ("loop: json:dumps\nscaling: {gpus_per_worker: 1}\n", "unknown field 'gpus_per_worker'"),
        ("loop: json:dumps\nmax_failures: 1.5\n", "TrainJob.max_failures must be"),
        ("loop: json:dumps\nwait_for_resources: yes please\n", "TrainJob.wait_for_resources"),
        ("loop: json:dumps\ndatasets: {train: s3://x}\n", "cannot be given in a job file"),
        ("loop: json:dumps\nregister: {name: m, stage: prod}\n", "register must be"),
        ("name: x\n", "a job needs a loop"),
        ("- just\n- a list\n", "must hold a mapping"),
    ],
)
def test_bad_job_files_exit_2_with_the_field_named(tmp_path, capsys, content, message):
    job = tmp_path / "job.yaml"
    job.write_text(content)
    assert cli.main(["train", str(job)]) == 2
    assert message in capsys.readouterr().err


def test_bad_set_value_exits_2_naming_the_field(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("loop: json:dumps\n")
    assert cli.main(["train", str(job), "--set", "checkpointing.mode=best"]) == 2
    assert "Checkpointing.mode must be one of ['max', 'min']" in capsys.readouterr().err


def test_schema_validates_every_example_job_file_and_rejects_unknown_fields(capsys):
    import jsonschema
    import yaml

    assert cli.main(["train", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "datasets" not in schema["properties"]  # not expressible in a file
    assert {"loop", "data_hash", "data_name", "data_source", "wait_for_resources", "register",
            "scaling", "checkpointing", "tags", "storage", "experiment"} \
        <= set(schema["properties"])
    assert JOB_FILES, "no example job file"
    for path in JOB_FILES:
        data = yaml.safe_load(path.read_text())
        jsonschema.validate(data, schema)
        with pytest.raises(jsonschema.ValidationError, match="unexpected"):
            jsonschema.validate({**data, "epochs": 3}, schema)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**data, "scaling": {"workers": 2, "gpu": 1}}, schema)


@pytest.mark.parametrize("path", JOB_FILES, ids=lambda p: p.name)
def test_example_job_files_build_their_job(path, monkeypatch):
    from raymlp.train import _cli

    monkeypatch.chdir(REPO)
    args = cli.build_parser().parse_args(["train", str(path), "--set", "epochs=3"])
    job, reg = _cli.job_from_args(args)
    assert job.config["epochs"] == 3
    assert reg is None or reg["name"]
