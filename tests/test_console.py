"""The one console layer: progress, the closing summary, and engines kept quiet.

The end-to-end test runs the README's main job as a user would (a subprocess, a fresh
directory, nothing configured) and reads everything it printed.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest

from raymlp import _config, _console
from raymlp.errors import ConfigError
from tests.conftest import REPO
from tests.helpers import ENGINE_NOISE


def test_plain_progress_prints_at_most_a_line_per_period_and_the_final_state(capsys,
                                                                             monkeypatch):
    monkeypatch.setattr(_console, "PLAIN_PERIOD_S", 3600.0)
    with _console.progress("training digits", total=3, unit="epoch") as bar:
        bar.update(loss=0.9)
        bar.update(loss=0.5, val_accuracy=0.81234567)
        bar.note("checkpoint kept")
        bar.update(loss=0.25, val_accuracy=0.97)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("training digits | 1/3 epoch | loss=0.9 | ")
    assert lines[1] == "training digits: checkpoint kept"
    assert re.fullmatch(r"training digits \| 3/3 epochs \| loss=0\.25 val_accuracy=0\.97 \| "
                        r"[\d.]+ s \(done\)", lines[2]), lines[2]
    assert bar.n == 3 and bar.fields == {"loss": 0.25, "val_accuracy": 0.97}


def test_plain_progress_reports_a_failure_and_ignores_updates_after_close(capsys):
    with pytest.raises(RuntimeError), _console.progress("deploying", unit="replica") as bar:
        bar.update(2)
        raise RuntimeError("boom")
    bar.update(5)
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("deploying | 2 replicas | ")
    assert out.rstrip().endswith("(failed)")
    assert bar.n == 2


def test_summary_prints_aligned_lines_without_none_values(capsys):
    _console.summary("training digits finished",
                     {"run id": "3f2a", "val_accuracy": 0.971234, "model": "models:/m-1",
                      "skipped": None})
    assert capsys.readouterr().out.splitlines() == [
        "training digits finished",
        "  run id        3f2a",
        "  val_accuracy  0.9712",
        "  model         models:/m-1",
    ]


def test_summary_in_jupyter_is_escaped_html(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(_console, "_jupyter", lambda: True)
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(obj))
    _console.summary("a <b> job", {"model": "<script>x</script>", "n": 2})
    [html] = [obj.data for obj in shown]
    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert "a &lt;b&gt; job" in html and "<td style='text-align:left'><code>2</code></td>" in html


def test_where_to_look_names_the_mlflow_ui_for_the_configured_store(raymlp_home):
    previous = _config.get().tracking_uri
    try:
        assert _console.where_to_look()["MLflow UI"] == \
            f"mlflow ui --backend-store-uri {_config.get().tracking_uri}"
        _config.configure(tracking_uri="http://mlflow.example:5000")
        assert _console.where_to_look()["MLflow UI"] == "http://mlflow.example:5000"
    finally:
        _config.configure(tracking_uri=previous)


def test_log_level_setting_is_read_from_the_environment(monkeypatch):
    saved = dict(_config._overrides)
    try:
        _config.reset()
        monkeypatch.delenv("RAYMLP_LOG_LEVEL", raising=False)
        assert _config.get().log_level == "ERROR"
        assert not _console.verbose()
        monkeypatch.setenv("RAYMLP_LOG_LEVEL", "info")
        _config.reset()
        assert _config.get().log_level == "INFO"
        assert _config.get().env()["RAYMLP_LOG_LEVEL"] == "INFO"
        assert _console.verbose()
        monkeypatch.setenv("RAYMLP_LOG_LEVEL", "chatty")
        _config.reset()
        with pytest.raises(ConfigError, match="log_level"):
            _config.get()
    finally:
        _config.reset()
        _config._overrides.update(saved)


def test_quiet_sets_the_engines_loggers_to_the_configured_level(raymlp_home):
    _console.quiet()
    level = logging.getLevelName(_config.get().log_level)
    for name in ("ray", "ray.serve", "mlflow", "alembic"):
        assert logging.getLogger(name).level == level
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"


def _clean_env(home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAYMLP_", "MLFLOW_")) and k != "RAY_ADDRESS"}
    env["RAYMLP_HOME"] = str(home)
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_main_job_shows_progress_and_a_summary_and_no_engine_noise(tmp_path):
    """Acceptance 7: `python examples/train_digits.py`, run as a user would, prints raymlp's
    progress and closing summary and none of the engines' log lines or warnings."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "train_digits.py"), "--epochs", "3"],
        cwd=tmp_path, env=_clean_env(tmp_path / "home"), capture_output=True, text=True,
        timeout=840, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for noise in ENGINE_NOISE:
        assert noise not in out, f"{noise!r} in the job's output:\n{out}"
    # Progress: the final state of the epoch counter, with the reported metrics.
    assert re.search(r"3(/3)? epochs .*val_accuracy=", out), out
    run_id = re.search(r"run id\s+([0-9a-f]{32})", out)
    assert run_id, out
    model = re.search(r"model\s+(models:/m-[0-9a-f]+)", out)
    assert model, out
    assert "mlflow ui --backend-store-uri sqlite:///" in out
    assert "registered models:/digits@champion" in out
