"""The quickstart notebook runs top to bottom in a real Jupyter kernel (nbclient), showing
raymlp's progress widget and summary and none of the engines' log lines or warnings."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import REPO
from tests.helpers import ENGINE_NOISE

pytestmark = [pytest.mark.slow]

WIDGET = "application/vnd.jupyter.widget-view+json"


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

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    stderr = [o.get("text", "") for o in outputs if o.get("name") == "stderr"]
    assert stderr == [], stderr
    everything = json.dumps([dict(o) for o in outputs])
    for noise in ENGINE_NOISE:
        assert noise not in everything, f"{noise!r} in the notebook's outputs: {everything}"
    # Progress: a live widget while the job trains; then the summary, as an HTML table.
    training = nb.cells[2].outputs
    assert any(WIDGET in o.get("data", {}) for o in training), training
    summaries = [o["data"]["text/html"] for o in training
                 if o["output_type"] == "display_data" and "run id" in o["data"].get("text/html", "")]
    assert len(summaries) == 1, training
    assert re.search(r"models:/m-[0-9a-f]+", summaries[0]), summaries[0]
    assert "mlflow ui --backend-store-uri" in summaries[0]


def _result(cell) -> dict:
    """The data of a cell's execute_result (display outputs such as progress come first)."""
    results = [o for o in cell.outputs if o["output_type"] == "execute_result"]
    assert results, cell.outputs
    return results[0]["data"]
