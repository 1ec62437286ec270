"""Build examples/quickstart.ipynb (run: python examples/make_quickstart.py)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

INTRO = """# jupyter-rapha quickstart

Train a model on hospital data without the data leaving the hospital. The training cell
below travels to the hospital's **edge kernel**, runs sealed off from every network
against the records, and only the trained weights, the metrics and a signed,
chain-anchored receipt come back.

This notebook: create a researcher key, dry-run the cell here on synthetic data
(`--local`), run it at the edge, and check the receipt."""

SETUP = """import os

from jupyter_rapha.keystore import default_key_path, load_or_create_key, public_key_line

EDGE = os.environ.get("EDGE_URL", "http://127.0.0.1:8470")
KEY = str(default_key_path())  # $RAPHA_KEY, else ~/.config/rapha/researcher_ed25519.pem
key, created = load_or_create_key(KEY)
print("created" if created else "using", KEY)
print("public key to register with the hospital:", public_key_line(key))"""

MODEL_NOTE = """## The model and its training cell

The cell is shipped alone, so it defines everything it needs: the imports and the model.
A tiny CNN reads 1x32x32 images (`image`, float32) and predicts the binary label
`finding` (int64). Inside the cell, `rapha` is the edge's runtime: `rapha.loader(...)`
yields batches of the granted fields, `rapha.log(...)` records metrics, `rapha.save(...)`
returns the weights (as safetensors)."""

TRAIN_CELL = """import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((2, 2)))
        self.head = nn.Linear(16 * 4, 2)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


torch.manual_seed(0)
model = TinyCNN()
optimiser = torch.optim.Adam(model.parameters(), lr=float(rapha.params.get("lr", 0.02)))
for epoch in range(rapha.epochs):
    total, batches = 0.0, 0
    for batch in rapha.loader(batch_size=16, shuffle=True):
        loss = nn.functional.cross_entropy(model(batch["image"]), batch["finding"])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        total, batches = total + loss.item(), batches + 1
    rapha.log(loss=total / batches, epoch=epoch)
rapha.save(model)"""

LOCAL_NOTE = """## 1. Dry run here, on synthetic data

`--local` runs the same cell in this notebook against random records shaped like the
dataset's schema (taken from the edge's catalog). Nothing is sent; it leaves a locally
trained `model` in the notebook."""

REMOTE_NOTE = """## 2. Run it at the edge

The same cell, signed with your key and submitted to the edge. The weights load into
`model` (`--returns model`); `_rapha_result` holds weights, metrics and receipt."""

RECEIPT_NOTE = """## 3. The receipt

Signed by the edge's key and anchored on its chain; checked here against both."""

RECEIPT = """result = _rapha_result
assert result is not None and result.verified, "the receipt did not verify"
print("loss per epoch:", [round(v, 4) for v in result.metrics["loss"]])
out = os.environ.get("RAPHA_OUT")
if out:  # e.g. `make demo` keeps the outputs for `rapha verify`
    print("saved to", result.save(out))
result.receipt_widget"""


def flags(local: bool) -> str:
    mode = "--local " if local else ""
    return f"%%rapha_train --edge $EDGE --dataset synthetic-cxr --budget 48 --epochs 6 {mode}--returns model\n"


def build() -> nbformat.NotebookNode:
    notebook = new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [
        new_markdown_cell(INTRO), new_code_cell("%load_ext jupyter_rapha"), new_code_cell(SETUP),
        new_markdown_cell(MODEL_NOTE), new_markdown_cell(LOCAL_NOTE), new_code_cell(flags(True) + TRAIN_CELL),
        new_markdown_cell(REMOTE_NOTE), new_code_cell(flags(False) + TRAIN_CELL),
        new_markdown_cell(RECEIPT_NOTE), new_code_cell(RECEIPT),
    ]
    return notebook


def main() -> None:
    target = Path(__file__).with_name("quickstart.ipynb")
    nbformat.write(build(), target)
    print("wrote", target)


if __name__ == "__main__":
    main()
