"""Build examples/finetune.ipynb (run: python examples/make_finetune.py)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

INTRO = """# Fine-tune a pretrained DenseNet121 at the hospital

Clinical models are rarely trained from scratch: a network pretrained elsewhere is
fine-tuned on the hospital's own images. Here a MONAI DenseNet121 is brought to the edge
as a **safetensors artifact** (`--artifact`), its helper code as an **included file**
(`--include`), and only its classifier head is trained on the chest images. The receipt
names the exact weights that went in (their sha256) beside the weights that came out.

(The demo edge's images are 1x32x32, so the network is a small 2-D DenseNet121: its
blocks are the standard 6/12/24/16 layers, with fewer features per layer.)"""

SETUP = """import os
import tempfile
from pathlib import Path

from jupyter_rapha.keystore import default_key_path, load_or_create_key, public_key_line

EDGE = os.environ.get("EDGE_URL", "http://127.0.0.1:8470")
key, created = load_or_create_key(str(default_key_path()))
print("public key to register with the hospital:", public_key_line(key))
WORK = Path(tempfile.mkdtemp(prefix="finetune-"))"""

PRETRAINED_NOTE = """## 1. The pretrained weights, as safetensors

Pretrained checkpoints usually come as `torch.save` files (`.pt`, `.pth`). Those are
pickles: loading one runs whatever code it holds, so they never travel. Here a stand-in
"pretrained" network is saved that way, and converted once to safetensors, the only
format an edge takes (tensors and nothing else)."""

PRETRAINED = """import torch
from monai.networks.nets import DenseNet121
from safetensors.torch import save_file

torch.manual_seed(0)
pretrained = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2, init_features=8, growth_rate=4)
torch.save(pretrained.state_dict(), WORK / "densenet121.pt")  # what a model zoo hands you

# The one-line conversion:
save_file(torch.load(WORK / "densenet121.pt", weights_only=True), str(WORK / "densenet121.safetensors"))
WEIGHTS = WORK / "densenet121.safetensors"
CHECKPOINT = WORK / "densenet121.pt"
parameters = sum(p.numel() for p in pretrained.parameters())
print(f"{WEIGHTS.name}: {WEIGHTS.stat().st_size} bytes, {parameters} parameters")"""

REFUSED_NOTE = """The `.pt` file itself is refused before anything leaves, with the conversion to run:"""

REFUSED = """%%rapha_train --edge $EDGE --dataset synthetic-cxr --budget 16 --artifact pretrained=$CHECKPOINT
rapha.save(rapha.artifact("pretrained"))"""

HELPERS_NOTE = """## 2. Helper code that travels with the cell

`finetune_helpers.py` (beside this notebook) freezes the pretrained features and builds
the network. `--include` sends it with the cell; the edge scans it like the cell and the
job imports it under its own name. The receipt's code digest covers the cell and it."""

HELPERS = """print(Path("finetune_helpers.py").read_text())"""

TRAIN_NOTE = """## 3. Fine-tune at the edge

`rapha.artifact("pretrained")` returns the state dict the edge checked (digest, size,
a safetensors file of numeric tensors) and staged read-only for the job. The cell loads
it, freezes the features, trains the head on the granted records, and saves the model."""

TRAIN = """import torch
from finetune_helpers import build_densenet, freeze_features

torch.manual_seed(0)
model = build_densenet()
model.load_state_dict(rapha.artifact("pretrained"))
trainable = freeze_features(model)
optimiser = torch.optim.Adam(trainable, lr=1e-2)
for epoch in range(rapha.epochs):
    total, batches = 0.0, 0
    for batch in rapha.loader(batch_size=16, shuffle=True):
        loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["finding"])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        total, batches = total + loss.item(), batches + 1
    rapha.log(loss=total / batches)
rapha.save(model)"""

FLAGS = ("%%rapha_train --edge $EDGE --dataset synthetic-cxr --budget 16 --epochs 2 "
         "--artifact pretrained=$WEIGHTS --include finetune_helpers.py --returns model\n")

RECEIPT_NOTE = """## 4. What the receipt binds

The receipt names the weights that went in (by sha256, the same as the local file's),
the code listing (cell and included file) and the weights that came out."""

RECEIPT = """import hashlib

result = _rapha_result
assert result is not None and result.verified, "the receipt did not verify"
job = result.verification.statement["predicate"]["job"]
[artifact] = job["artifacts"]
assert artifact["sha256"] == hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
print("weights in :", artifact["name"], artifact["sha256"], artifact["bytes"], "bytes")
print("code       :", job["code"]["sha256"], [f["path"] for f in job["code"]["files"]])
print("weights out:", result.verification.statement["subject"][0]["digest"]["sha256"])
print("loss per epoch:", [round(v, 4) for v in result.metrics["loss"]])
out = os.environ.get("RAPHA_OUT")
if out:
    print("saved to", result.save(out))
result.receipt_widget"""


def build() -> nbformat.NotebookNode:
    notebook = new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    refused = new_code_cell(REFUSED)
    refused.metadata["tags"] = ["raises-exception"]  # shown refused; the notebook goes on
    notebook.cells = [
        new_markdown_cell(INTRO), new_code_cell("%load_ext jupyter_rapha"), new_code_cell(SETUP),
        new_markdown_cell(PRETRAINED_NOTE), new_code_cell(PRETRAINED),
        new_markdown_cell(REFUSED_NOTE), refused,
        new_markdown_cell(HELPERS_NOTE), new_code_cell(HELPERS),
        new_markdown_cell(TRAIN_NOTE), new_code_cell(FLAGS + TRAIN),
        new_markdown_cell(RECEIPT_NOTE), new_code_cell(RECEIPT),
    ]
    return notebook


def main() -> None:
    target = Path(__file__).with_name("finetune.ipynb")
    nbformat.write(build(), target)
    print("wrote", target)


if __name__ == "__main__":
    main()
