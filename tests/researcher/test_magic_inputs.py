"""%%rapha_train --artifact and --include in a real IPython shell: the local dry run reads
the artifact as the edge's runtime does; a wrong file stops the cell with one message."""

from __future__ import annotations

import json
import sys

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


INCLUDING_CELL = """
import helpers
from mylib.layers import scale
assert helpers.WHERE == "lib" and scale(2) == 6
rapha.save({"w": torch.full((2,), float(scale(1)))})
"""


def _library(root):
    (root / "lib" / "mylib").mkdir(parents=True)
    (root / "lib" / "helpers.py").write_text('WHERE = "lib"\n')
    (root / "lib" / "mylib" / "__init__.py").write_text("")
    (root / "lib" / "mylib" / "layers.py").write_text("def scale(x):\n    return x * 3\n")


def test_local_imports_included_files_from_where_they_are_named(shell, tmp_path, monkeypatch):
    """As at the edge: a file under its own name, a folder under the folder's name, the
    path relative to the notebook's folder or absolute, and the included copy first on
    the import path (a helpers.py beside the notebook does not shadow it)."""
    _library(tmp_path)
    notebook = tmp_path / "notebook"
    notebook.mkdir()
    (notebook / "helpers.py").write_text('WHERE = "beside the notebook"\n')
    monkeypatch.chdir(notebook)
    monkeypatch.syspath_prepend(str(notebook))  # a kernel imports from its own folder
    path_before = list(sys.path)
    for helpers, folder in (("../lib/helpers.py", "../lib/mylib"), (str(tmp_path / "lib" / "helpers.py"),
                                                                     str(tmp_path / "lib" / "mylib"))):
        outcome = shell.run_cell(f"%%rapha_train --dataset d --budget 4 --local --schema {SCHEMA_ARG} "
                                 f"--include {helpers} --include {folder}\n{INCLUDING_CELL}")
        assert outcome.error_in_exec is None, outcome.error_in_exec
        assert torch.equal(shell.user_ns["_rapha_result"].state_dict["w"], torch.full((2,), 3.0))
        assert sys.path == path_before and "helpers" not in sys.modules and "mylib" not in sys.modules


def test_local_uses_the_text_that_was_read_for_the_job(shell, tmp_path, monkeypatch):
    """An include edited between runs is read again; a cell without --include cannot
    import a file that only an earlier run included."""
    _library(tmp_path)
    monkeypatch.chdir(tmp_path)
    run = f"%%rapha_train --dataset d --budget 4 --local --schema {SCHEMA_ARG} --include lib/helpers.py\n"
    cell = "import helpers\nrapha.log(where=float(len(helpers.WHERE)))\nrapha.save({'w': torch.zeros(1)})\n"
    assert shell.run_cell(run + cell).error_in_exec is None
    (tmp_path / "lib" / "helpers.py").write_text('WHERE = "edited"\n')
    assert shell.run_cell(run + cell).error_in_exec is None
    assert shell.user_ns["_rapha_result"].metrics == {"where": [6.0]}
    outcome = shell.run_cell(f"%%rapha_train --dataset d --budget 4 --local --schema {SCHEMA_ARG}\n{cell}")
    assert isinstance(outcome.error_in_exec, RaphaCellError)
    assert "ModuleNotFoundError at line 2 of the cell" in "\n".join(outcome.error_in_exec.lines)
