"""examples/quickstart.ipynb, run through the extension under a real `jupyter server`.

How: the test starts `python -m jupyter_server` as a subprocess on 127.0.0.1 with the
extension enabled and configured (two real edges, the researcher key), starts a kernel
through the server's REST API and runs each code cell over the kernel's websocket
(/api/kernels/{id}/channels, Jupyter message protocol v5), exactly as a browser does.
The kernel is a child of the server, so the magic finds the server by its parent pid.

The kernel's own $RAPHA_KEY points at a fresh, unregistered key (the notebook creates it):
a job sent straight to the edge would be refused, so a completed job proves that the
server's extension, which holds the registered key, signed and routed it.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import requests

from tests.extension.server_session import Kernel, auth

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_runs_through_the_extension(jupyter, two_edges, researcher_key):
    url, tmp_path = jupyter
    notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    kernel = Kernel(url)
    outputs = []
    for cell in (c for c in notebook.cells if c.cell_type == "code"):
        text, errors = kernel.run(cell.source)
        assert not errors, (cell.source[:200], text, errors)
        outputs.append(text)
    joined = "\n".join(outputs)
    assert "local dry run" in joined
    assert "completed; receipt verified" in joined
    assert (tmp_path / "out" / "receipt.json").is_file()

    # The job went through the extension, to the edge the cell named (--edge, of two offering it).
    jobs = requests.get(url + "/rapha/api/jobs", headers=auth(), timeout=30).json()["jobs"]
    [job] = [j for j in jobs if j["state"] == "completed" and j["dataset"] == "synthetic-cxr"
             and j["job_id"] in joined]
    assert job["site"] == "north"

    # Detach and reattach: a fresh kernel lists the job and gets weights and a verified receipt back.
    other = Kernel(url)
    text, errors = other.run("%load_ext jupyter_rapha\njobs = %rapha_jobs\n"
                             f"r = %rapha_attach {job['job_id']}\nprint('ATTACHED', r.verified, len(r.state_dict))")
    assert not errors, (text, errors)
    assert job["job_id"] in text and "ATTACHED True" in text
