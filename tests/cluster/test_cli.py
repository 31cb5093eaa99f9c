"""``raymlp cluster render|validate`` and argument errors of ``submit``/``jobs``."""

from __future__ import annotations

import textwrap

import yaml

from raymlp.cluster import validate_manifest

VALID_JOB = """
apiVersion: ray.io/v1
kind: RayJob
metadata: {name: ok}
spec:
  entrypoint: python -c "print(1)"
  clusterSelector: {ray.io/cluster: existing}
"""


def test_render_prints_every_spec_of_a_file_or_the_named_one(cli, tmp_path):
    spec_file = tmp_path / "specs.py"
    spec_file.write_text(textwrap.dedent("""
        from raymlp.cluster import RayClusterSpec, RayJobSpec, WorkerGroup
        _private = RayClusterSpec(name="hidden")
        cluster = RayClusterSpec(name="c1", workers=[WorkerGroup(name="w", replicas=2)])
        job = RayJobSpec(name="j1", entrypoint="python x.py", existing_cluster="c1", runtime="image")
    """))
    code, out, _ = cli("cluster", "render", str(spec_file))
    docs = list(yaml.safe_load_all(out))
    assert code == 0 and [(d["kind"], d["metadata"]["name"]) for d in docs] == [("RayCluster", "c1"), ("RayJob", "j1")]
    assert all(validate_manifest(d) == [] for d in docs)
    code, out, _ = cli("cluster", "render", f"{spec_file}:job")
    assert code == 0 and [d["kind"] for d in yaml.safe_load_all(out)] == ["RayJob"]
    code, _, err = cli("cluster", "render", f"{spec_file}:nothing")
    assert code == 2 and "specs there: ['_private', 'cluster', 'job']" in err


def test_render_of_an_invalid_spec_exits_2_with_the_field(cli, tmp_path):
    spec_file = tmp_path / "bad.py"
    spec_file.write_text("from raymlp.cluster import WorkerGroup\nWorkerGroup(name='g', replicas=-3)\n")
    code, out, err = cli("cluster", "render", str(spec_file))
    assert (code, out) == (2, "") and "WorkerGroup.replicas must be an integer >= 0, got replicas=-3" in err


def test_validate_exits_0_and_skips_other_kinds(cli, tmp_path):
    path = tmp_path / "mixed.yaml"
    path.write_text(VALID_JOB + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n")
    code, out, _ = cli("cluster", "validate", str(path))
    assert code == 0
    assert f"{path}[0] RayJob ok: valid" in out
    assert f"{path}[1] ConfigMap cm: skipped (not a ray.io RayCluster/RayJob/RayService)" in out
    assert "1 Ray resource(s) checked, 0 invalid" in out


def test_validate_exits_1_naming_every_bad_path(cli, tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(VALID_JOB)
    bad.write_text(VALID_JOB.replace("name: ok", "name: bad").replace("entrypoint:", "entrypiont:"))
    code, _, err = cli("cluster", "validate", str(good), str(bad))
    assert code == 1
    assert f"{bad}[0] RayJob bad: INVALID" in err
    assert "spec.entrypiont: unknown field 'entrypiont'" in err
    assert "2 Ray resource(s) checked, 1 invalid" in err


def test_validate_of_a_missing_or_broken_file_exits_2(cli, tmp_path):
    code, _, err = cli("cluster", "validate", str(tmp_path / "absent.yaml"))
    assert code == 2 and "cannot read" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [b\n")
    code, _, err = cli("cluster", "validate", str(broken))
    assert code == 2 and "not valid YAML" in err


def test_submit_without_entrypoint_or_address_is_a_clear_error(cli, monkeypatch, tmp_path):
    from raymlp import _config

    monkeypatch.setenv("RAYMLP_HOME", str(tmp_path))  # a home without a managed local head
    monkeypatch.delenv("RAYMLP_RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _config.reset()
    try:
        code, _, err = cli("submit", "--address", "http://127.0.0.1:9", "--")
        assert code == 2 and "no entrypoint" in err
        code, _, err = cli("submit", "--", "python", "x.py")
        assert code == 2 and "pass --address" in err and "raymlp up" in err
        code, _, err = cli("submit", "--dashboard", "http://127.0.0.1:9", "--env", "NOEQUALS", "--", "python", "x.py")
        assert code == 2 and "--env takes KEY=VALUE, got 'NOEQUALS'" in err
    finally:
        _config.reset()
