"""The quickstart notebook runs top to bottom in a real Jupyter kernel (nbclient)."""

from __future__ import annotations

import os
import re

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.slow]


def test_quickstart_notebook_executes_in_a_jupyter_kernel(ray_session, raymlp_home, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    # The kernel joins this session's Ray instance, as a notebook on a cluster would.
    monkeypatch.setenv("RAYMLP_RAY_ADDRESS", ray_session.address)
    monkeypatch.setenv("RAYMLP_HOME", str(raymlp_home))
    nb = nbformat.read(REPO / "examples" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO)}}).execute()

    init_out = _result(nb.cells[1])
    assert "text/html" in init_out and "raymlp" in init_out["text/html"]
    assert "TrainResult" in _result(nb.cells[2])["text/html"]
    text = "".join(o.get("text", "") for o in nb.cells[3].outputs)
    m = re.search(r"epochs=(\d+) first_loss=([\d.]+) last_loss=([\d.]+)", text)
    assert m, text
    assert int(m.group(1)) == 30
    assert float(m.group(3)) < float(m.group(2)) / 10
    pred = float(re.search(r"prediction at x=1: ([-\d.]+)", text).group(1))
    assert abs(pred - 3.5) < 0.1
    assert os.environ["RAYMLP_RAY_ADDRESS"] == ray_session.address


def _result(cell) -> dict:
    """The data of a cell's execute_result (streams such as warnings may come first)."""
    results = [o for o in cell.outputs if o["output_type"] == "execute_result"]
    assert results, cell.outputs
    return results[0]["data"]
