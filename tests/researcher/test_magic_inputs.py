"""%%rapha_train --artifact and --include in a real IPython shell: the local dry run reads
the artifact as the edge's runtime does; a wrong file stops the cell with one message."""

from __future__ import annotations

import json

import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell
from safetensors.torch import save_file

from jupyter_rapha.magic import RaphaCellError
from tests.researcher.fake_edge import SCHEMA

SCHEMA_ARG = json.dumps(SCHEMA).replace(" ", "")
CELL = """
state = rapha.artifact("backbone")
assert torch.equal(state["w"], torch.arange(4.0))
rapha.save(state)
"""


@pytest.fixture
def shell(tmp_path):
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_rapha")
    ip.run_cell("import torch")
    save_file({"w": torch.arange(4.0)}, str(tmp_path / "w.safetensors"))
    torch.save({"w": torch.arange(4.0)}, tmp_path / "w.pt")
    ip.user_ns.update({"WEIGHTS": str(tmp_path / "w.safetensors"), "CHECKPOINT": str(tmp_path / "w.pt")})
    yield ip
    ip.user_ns.pop("_rapha_result", None)


def test_the_local_dry_run_reads_the_artifact(shell):
    outcome = shell.run_cell(f"%%rapha_train --dataset d --budget 4 --local --schema {SCHEMA_ARG} "
                             f"--artifact backbone={shell.user_ns['WEIGHTS']}\n{CELL}")
    assert outcome.error_in_exec is None
    assert torch.equal(shell.user_ns["_rapha_result"].state_dict["w"], torch.arange(4.0))


def test_a_checkpoint_stops_the_cell_with_the_conversion(shell, capsys):
    outcome = shell.run_cell(f"%%rapha_train --dataset d --budget 4 --edge http://127.0.0.1:9 "
                             f"--artifact backbone=$CHECKPOINT\n{CELL}")
    assert isinstance(outcome.error_in_exec, RaphaCellError)
    shown = "\n".join(outcome.error_in_exec.lines)
    assert "zip file" in shown and "weights_only=True" in shown and "Traceback" not in shown


def test_an_artifact_the_job_did_not_bring_is_named(shell):
    outcome = shell.run_cell(f"%%rapha_train --dataset d --budget 4 --local --schema {SCHEMA_ARG}\n"
                             "rapha.artifact('backbone')\n")
    assert isinstance(outcome.error_in_exec, RaphaCellError)
    assert "no artifact named 'backbone'" in "\n".join(outcome.error_in_exec.lines)


def test_an_include_that_is_missing_stops_the_cell(shell, tmp_path):
    outcome = shell.run_cell(f"%%rapha_train --dataset d --budget 4 --edge http://127.0.0.1:9 "
                             f"--include {tmp_path / 'gone.py'}\nx = 1\n")
    assert isinstance(outcome.error_in_exec, RaphaCellError)
    assert "no such file or folder" in "\n".join(outcome.error_in_exec.lines)
