"""The quickstart notebook runs headless (nbclient), as `make demo` runs it: a local dry
run, the same cell at a real edge, the weights back in `model`, the receipt verified."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_quickstart_notebook_runs_headless(demo_edge, tmp_path, monkeypatch):
    edge, key = demo_edge
    key_path = tmp_path / "researcher.pem"
    key_path.write_bytes(key.to_pem())
    key_path.chmod(0o600)
    out = tmp_path / "out"
    monkeypatch.setenv("EDGE_URL", edge.url)
    monkeypatch.setenv("RAPHA_KEY", str(key_path))
    monkeypatch.setenv("RAPHA_OUT", str(out))
    monkeypatch.delenv("RAPHA_JUPYTER_URL", raising=False)
    notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "examples")}}).execute()
    assert sorted(p.name for p in out.iterdir()) == ["edge.pub", "metrics.json", "receipt.json", "weights.safetensors"]
    losses = json.loads((out / "metrics.json").read_text())["loss"]
    assert losses[-1] < losses[0]
    shown = "".join(o.get("data", {}).get("text/html", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert "signature" in shown  # the receipt widget rendered its checks
    # the progress widget, as a headless run saves it: its final values in readable text
    texts = [o.get("data", {}).get("text/plain", "") for cell in notebook.cells for o in cell.get("outputs", [])]
    [progress] = [t for t in texts if t.startswith("rapha: job ")]
    assert " | completed | epoch 6/6 | records 48/48 | " in progress and "loss=" in progress, progress
