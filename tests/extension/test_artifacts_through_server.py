"""``%%rapha_train --artifact NAME=PATH --include ...`` the way a JupyterLab user runs it:
a kernel of a real `jupyter server` with the rapha extension, the cell signed and routed
by the extension to a real edge. The job sees the artifact bit-identical (it saves it
unchanged, and the weights that come back are the very bytes that went in) and imports
the included helper and package, named relative to the kernel's folder; the receipt names
the artifact's digest and every included file. The same cell then runs with ``--local``
in the same kernel, importing the same files under the same names."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from jupyter_rapha.inputs import file_sha256
from tests.extension.server_session import Kernel

pytestmark = pytest.mark.slow

CELL = """%%rapha_train --dataset synthetic-cxr --budget 4 --site north {local}\
--artifact backbone=backbone.safetensors --include helpers.py --include mylib
import helpers
from mylib.layers import scale

state = rapha.artifact("backbone")
assert scale(2) == 6
rapha.log(total=helpers.total(state))
rapha.save(state)
"""

REPORT = """
import base64, hashlib, json
r = _rapha_result
job = json.loads(base64.b64decode(r.receipt["envelope"]["payload"]))["predicate"]["job"]
print("REPORT " + json.dumps({"weights": hashlib.sha256(r.weights_bytes).hexdigest(), "verified": r.verified,
      "artifacts": job["artifacts"], "files": [f["path"] for f in job["code"]["files"]], "metrics": r.metrics}))
"""


def _workspace(folder):
    torch.manual_seed(0)
    save_file({"layer.weight": torch.randn(16, 8), "layer.bias": torch.randn(16),
               "steps": torch.tensor([3], dtype=torch.int64)}, str(folder / "backbone.safetensors"))
    (folder / "helpers.py").write_text("def total(state):\n    return sum(float(t.sum()) for t in state.values())\n")
    (folder / "mylib").mkdir()
    (folder / "mylib" / "__init__.py").write_text("")
    (folder / "mylib" / "layers.py").write_text("def scale(x):\n    return x * 3\n")


def test_an_artifact_and_included_files_go_through_the_server_to_the_edge(jupyter):
    url, tmp_path = jupyter
    work = tmp_path / "work"
    work.mkdir()
    _workspace(work)
    weights = work / "backbone.safetensors"
    kernel = Kernel(url)
    text, errors = kernel.run(f"%load_ext jupyter_rapha\nimport os\nos.chdir({str(work)!r})")
    assert not errors, (text, errors)

    text, errors = kernel.run(CELL.format(local=""))
    assert not errors, (text, errors)
    assert "completed; receipt verified" in text, text
    text, errors = kernel.run(REPORT)
    assert not errors, (text, errors)
    report = json.loads(text.split("REPORT ", 1)[1].splitlines()[0])
    assert report["weights"] == file_sha256(weights) and report["verified"] is True
    assert report["artifacts"] == [{"name": "backbone", "sha256": file_sha256(weights),
                                    "bytes": weights.stat().st_size}]
    assert report["files"] == ["<cell>", "helpers.py", "mylib/__init__.py", "mylib/layers.py"]
    expected = sum(float(t.sum()) for t in load_file(str(weights)).values())
    assert report["metrics"]["total"] == [pytest.approx(expected, rel=1e-6)]

    text, errors = kernel.run(CELL.format(local="--local ") + "\nprint('LOCAL', helpers.__name__)\n")
    assert not errors, (text, errors)
    assert "local dry run" in text and "LOCAL helpers" in text, text
