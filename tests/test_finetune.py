"""The fine-tuning notebook runs headless (nbclient): a MONAI DenseNet121 brought to a
real edge as a safetensors artifact, with its helper module included, fine-tuned on the
synthetic chest images; the .pt checkpoint is refused before it leaves; the receipt
names the weights that went in."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_finetune_notebook_runs_headless(demo_edge, tmp_path, monkeypatch):
    edge, key = demo_edge
    key_path = tmp_path / "researcher.pem"
    key_path.write_bytes(key.to_pem())
    key_path.chmod(0o600)
    out = tmp_path / "out"
    monkeypatch.setenv("EDGE_URL", edge.url)
    monkeypatch.setenv("RAPHA_KEY", str(key_path))
    monkeypatch.setenv("RAPHA_OUT", str(out))
    monkeypatch.delenv("RAPHA_JUPYTER_URL", raising=False)
    notebook = nbformat.read(ROOT / "examples" / "finetune.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "examples")}}).execute()
    assert sorted(p.name for p in out.iterdir()) == ["edge.pub", "metrics.json", "receipt.json", "weights.safetensors"]
    assert len(json.loads((out / "metrics.json").read_text())["loss"]) == 2
    texts = ["".join(o.get("text", "")) + "".join(o.get("traceback", []))
             for cell in notebook.cells for o in cell.get("outputs", [])]
    shown = "\n".join(texts)
    # the .pt checkpoint was refused before anything left, with the conversion to run
    assert "is a zip file (torch.save's checkpoint format" in shown and "weights_only=True" in shown
    assert "weights in : pretrained " in shown
