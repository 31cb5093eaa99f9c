"""`raymlp pipeline ...`: run, compile, runs, status, graph, resume (in process, local mode)."""

from __future__ import annotations

import json

from raymlp.cli import main

REF = "tests/pipelines/flows.py:branchy"


def test_cli_run_status_runs_graph_compile(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(__file__.rsplit("/tests/", 1)[0])
    assert main(["pipeline", "run", REF, "--local", "--param", f"log={tmp_path}",
                 "--param", "n=5"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["pipeline", "status", run_id, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["status"] == "SUCCEEDED" and status["steps"]["echo-2"] == "SUCCEEDED"
    assert main(["pipeline", "runs", "--pipeline", "branchy"]) == 0
    assert run_id in capsys.readouterr().out
    assert main(["pipeline", "graph", run_id]) == 0
    graph = capsys.readouterr().out
    assert graph.startswith("flowchart TD") and "SKIPPED" in graph
    assert main(["pipeline", "graph", REF, "--format", "dot"]) == 0
    assert capsys.readouterr().out.startswith('digraph "branchy"')
    assert main(["pipeline", "compile", REF, str(tmp_path / "p.yaml")]) == 0
    assert (tmp_path / "p.yaml").is_file()
    assert main(["pipeline", "run", str(tmp_path / "p.yaml"), "--local", "--param",
                 f"log={tmp_path}"]) == 0
    assert main(["pipeline", "run", REF, "--local", "--param", "n=oops"]) == 2
    assert "branchy.params.n" in capsys.readouterr().err
    assert main(["pipeline", "resume", run_id, "--local"]) == 0
