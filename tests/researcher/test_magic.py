"""%%rapha_train in a real IPython shell, against the fake edge."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell

from jupyter_rapha.keystore import create_key
from jupyter_rapha.magic import RaphaCellError
from tests.researcher.fake_edge import SCHEMA, FakeEdge

CELL = """
import torch
from torch import nn
model = nn.Sequential(nn.Flatten(), nn.Linear(1024, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
for epoch in range(rapha.epochs):
    for batch in rapha.loader(batch_size=16, shuffle=True):
        loss = nn.functional.cross_entropy(model(batch["image"]), batch["finding"])
        opt.zero_grad(); loss.backward(); opt.step()
    rapha.log(loss=loss.item(), epoch=epoch)
rapha.save(model)
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    key_path = tmp_path_factory.mktemp("magic") / "me.pem"
    key = create_key(key_path)
    with FakeEdge([key.public]) as edge:
        yield edge, key_path


@pytest.fixture
def shell(setup):
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_rapha")
    edge, key_path = setup
    ip.user_ns.update({"EDGE": edge.url, "KEY": str(key_path), "EDGE_OBJ": edge})
    yield ip
    for name in ("model", "weights", "_rapha_result"):
        ip.user_ns.pop(name, None)


def train(ip, args: str, cell: str = CELL):
    return ip.run_cell(f"%%rapha_train --dataset synthetic-cxr --key $KEY {args}\n{cell}")


def test_remote_run_loads_weights_into_the_module(shell, capsys):
    shell.run_cell("from torch import nn\nmodel = nn.Sequential(nn.Flatten(), nn.Linear(1024, 2))\n"
                   "before = model[1].weight.detach().clone()")
    outcome = train(shell, "--edge $EDGE --budget 32 --epochs 2 --returns model")
    assert outcome.error_in_exec is None
    result = shell.user_ns["_rapha_result"]
    assert outcome.result is result and result.verified
    assert torch.equal(shell.user_ns["model"][1].weight, result.state_dict["1.weight"])
    assert not torch.equal(shell.user_ns["before"], result.state_dict["1.weight"])
    out = capsys.readouterr().out
    assert "completed" in out and "receipt verified" in out and "weights loaded into model" in out
    # the fake edge's receipt carries no attestation quote: verified, with that warning named
    assert "&#9888; verified, with warnings: attestation" in result._repr_html_()


def test_remote_run_binds_a_state_dict_when_the_name_is_free(shell):
    assert train(shell, "--edge {EDGE} --budget 16 --returns weights --fields image,finding").error_in_exec is None
    assert set(shell.user_ns["weights"]) == {"1.weight", "1.bias"}


def test_preflight_stops_the_cell_before_it_leaves(shell, capsys):
    before = len(shell.user_ns["EDGE_OBJ"].jobs)
    outcome = train(shell, "--edge $EDGE --budget 8", "import torch\nimport socket\n" + CELL)
    assert isinstance(outcome.error_in_exec, RaphaCellError)
    text = "".join(capsys.readouterr())
    # the editor's line: the cell's line 2 is the notebook's line 3, under %%rapha_train
    assert "preflight stopped the cell" in text and "line 3 " in text and "3 | import socket" in text
    assert "attests with unsafe_software (UNSAFE)" in text
    assert len(shell.user_ns["EDGE_OBJ"].jobs) == before  # nothing was submitted


def test_denial_is_one_clean_message(shell, capsys):
    shell.user_ns["_rapha_result"] = "stale"
    outcome = train(shell, "--edge $EDGE --budget 8 --no-preflight", "import socket\n" + CELL)
    assert isinstance(outcome.error_in_exec, RaphaCellError)
    assert shell.user_ns["_rapha_result"] is None
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "denied by the scan gate" in text and "socket" in text and "Traceback" not in text


def test_job_error_shows_type_and_line(shell, capsys):
    outcome = train(shell, "--edge $EDGE --budget 8", "x = 1\npatient = 'DOE' + '^JANE'\nraise ValueError(patient)\n")
    assert isinstance(outcome.error_in_exec, RaphaCellError)
    text = "".join(capsys.readouterr())
    # Numbered as the editor numbers them (line 1 is %%rapha_train), quoted from our own copy of the cell.
    assert "ValueError at line 4 of the cell" in text and "    4 | raise ValueError(patient)" in text
    assert "DOE^JANE" not in text
    # the job said where the cell starts, so the edge's own status (what the side panel
    # lists) names the editor's line too, not the code's line 3
    job = next(j for j in shell.user_ns["EDGE_OBJ"].jobs.values() if j["error"])
    assert job["spec"].cell_first_line == 2 and job["error"]["line"] == 4


def test_local_error_shows_the_cell_line_and_message_not_library_frames(shell, capsys):
    cell = "import torch\nfor batch in rapha.loader(batch_size=4):\n    label = batch['findings']\n"
    outcome = train(shell, "--edge $EDGE --budget 8 --local", cell)
    assert isinstance(outcome.error_in_exec, RaphaCellError)
    text = "".join(capsys.readouterr()) + str(outcome.error_in_exec)
    shown = outcome.error_in_exec._render_traceback_()
    assert shown[0] == "rapha: the job failed in the local dry run: KeyError at line 4 of the cell: 'findings'"
    assert shown[1] == "    4 |     label = batch['findings']"
    assert "Traceback" not in text and "site-packages" not in text and "local.py" not in text


def test_local_error_from_the_rapha_runtime_names_its_line(shell):
    schema = json.dumps(SCHEMA).replace(" ", "")
    outcome = train(shell, f"--budget 8 --local --schema {schema}", "x = 1\nrapha.log(loss='high')\n")
    assert outcome.error_in_exec._render_traceback_()[0] == (
        "rapha: the job failed in the local dry run: BadInput at line 3 of the cell: rapha.log: loss must be a "
        "number, not str")


def test_local_run_with_the_catalog_schema(shell, capsys):
    outcome = train(shell, "--edge $EDGE --budget 48 --epochs 2 --local --returns model")
    assert outcome.error_in_exec is None
    result = shell.user_ns["_rapha_result"]
    assert result.local and result.receipt is None and len(result.metrics["loss"]) == 2
    assert torch.equal(shell.user_ns["model"][1].weight, result.state_dict["1.weight"])
    assert "48 synthetic records" in capsys.readouterr().out


def test_local_run_with_a_schema_and_no_edge(shell):
    schema = json.dumps(SCHEMA).replace(" ", "")
    assert train(shell, f"--budget 8 --local --schema {schema}").error_in_exec is None
    assert "rapha" not in shell.user_ns


def test_wrong_shape_for_returns_is_reported(shell, capsys):
    shell.run_cell("from torch import nn\nmodel = nn.Linear(3, 3)")
    outcome = train(shell, "--edge $EDGE --budget 8 --returns model")
    assert isinstance(outcome.error_in_exec, RaphaCellError)
    assert "do not fit model" in "".join(capsys.readouterr())


def test_usage_errors(shell, capsys):
    assert train(shell, "--budget 8").error_in_exec is not None  # neither --edge nor --local --schema
    assert shell.run_cell("%%rapha_train --budget 8\nx=1").error_in_exec is not None  # no --dataset
    assert train(shell, "--edge $EDGE --budget 8 --param oops").error_in_exec is not None


def test_import_stays_cheap():
    code = "import sys, jupyter_rapha, jupyter_rapha.magic, jupyter_rapha.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_jobs_and_attach_without_a_jupyter_server(shell, setup, capsys):
    from jupyter_rapha.client import EdgeClient, make_jobspec
    from jupyter_rapha.keystore import load_key

    edge, key_path = setup
    assert train(shell, "--edge $EDGE --budget 8").error_in_exec is None
    finished = shell.user_ns["_rapha_result"].job_id
    # A job submitted elsewhere (another kernel, before a restart), still running when we attach.
    edge.job_delay = 0.5
    key = load_key(key_path)
    spec = make_jobspec(CELL, "synthetic-cxr", ["image", "finding"], 8, 600, {"epochs": 3}, key.key_id)
    running = EdgeClient(edge.url, key).submit(spec)
    capsys.readouterr()
    jobs = shell.run_line_magic("rapha_jobs", "--edge $EDGE --key $KEY")
    listed = capsys.readouterr().out
    assert {finished, running} <= {j["job_id"] for j in jobs} and finished in listed and "fake-edge" in listed
    # The short id that listings and progress lines show is enough.
    result = shell.run_line_magic("rapha_attach", f"{running[:8]} --edge $EDGE --key $KEY --returns attached")
    edge.job_delay = 0.0
    assert result.job_id == running and result.verified and shell.user_ns["_rapha_result"] is result
    assert set(shell.user_ns.pop("attached")) == {"1.weight", "1.bias"}
    out = capsys.readouterr().out
    assert f"job {running}" in out
    # the epochs the job asked for come from the edge: reattached, it still shows k/N
    assert re.search(rf"job {running[:8]}[^|]* \| running \| epoch \d/3 \|.*ETA", out), out


def test_attach_to_an_unknown_job_is_one_clean_message(shell, capsys):
    with pytest.raises(RaphaCellError) as caught:
        shell.run_line_magic("rapha_attach", f"{'0' * 32} --edge $EDGE --key $KEY")
    assert "no job" in str(caught.value) and "Traceback" not in str(caught.value)


def test_key_under_a_jupyter_server_is_refused_not_ignored(shell, monkeypatch):
    monkeypatch.setenv("RAPHA_JUPYTER_URL", "http://127.0.0.1:9")  # this kernel runs under a server
    with pytest.raises(RaphaCellError) as caught:
        shell.run_cell("%%rapha_train --dataset synthetic-cxr --budget 8 --key other.pem\nx = 1\n",
                       silent=False).raise_error()
    text = str(caught.value)
    assert "--key is not used under a Jupyter server" in text and "c.RaphaExtension.key_path" in text


def test_a_metric_name_the_edge_refuses_is_refused_in_the_notebook_the_same_way_remote_and_local(shell, capsys):
    from jupyter_rapha.protocol.contract import metric_name_refusal

    name = "validation_loss_of_the_held_back_fold_after_warmup_abcde"  # 56 characters
    cell = f"import torch\nrapha.log({name}=0.5)\nrapha.save(torch.nn.Linear(1, 1))\n"
    expected = f"line 3: {metric_name_refusal(name)}"  # the editor's line 3, under %%rapha_train
    before = len(shell.user_ns["EDGE_OBJ"].jobs)
    remote = train(shell, "--edge $EDGE --budget 8", cell)
    remote_text = "".join(capsys.readouterr()) + "\n".join(remote.error_in_exec._render_traceback_())
    local = train(shell, "--edge $EDGE --budget 8 --local", cell)
    local_text = "\n".join(local.error_in_exec._render_traceback_())
    assert expected in remote_text and "preflight stopped the cell" in remote_text
    assert expected in local_text
    assert len(shell.user_ns["EDGE_OBJ"].jobs) == before  # nothing was submitted, no budget spent


def fake_environment(**versions: str) -> dict:
    import importlib.metadata

    packages = {name: importlib.metadata.version(name) for name in ("torch", "numpy", "safetensors")} | versions
    return {"python": "3.11.7", "implementation": "cpython", "complete": True, "packages": packages,
            "modules": {name: [name] for name in packages}, "stdlib": sorted(sys.stdlib_module_names)}


@pytest.fixture
def listing(shell):
    edge = shell.user_ns["EDGE_OBJ"]
    yield edge
    edge.environment = None


def test_local_warns_where_this_kernels_versions_differ_from_the_edges(shell, listing, capsys):
    listing.environment = fake_environment(torch="2.1.0")
    assert train(shell, "--edge $EDGE --budget 8 --local").error_in_exec is None
    out = capsys.readouterr().out
    assert (f"rapha: warning: torch is {torch.__version__} here but 2.1.0 at edge fake-edge (imported at line 3): "
            "the dry run may behave differently from the job") in out
    assert "numpy is" not in out and "local dry run on 8 synthetic records" in out
    listing.environment = fake_environment()
    assert train(shell, "--edge $EDGE --budget 8 --local").error_in_exec is None
    assert "warning" not in capsys.readouterr().out  # the same versions: nothing to say


def test_local_warns_of_an_import_the_edge_lacks_and_the_remote_run_stops_on_it(shell, listing, capsys):
    listing.environment = fake_environment()
    del listing.environment["packages"]["numpy"], listing.environment["modules"]["numpy"]
    cell = "import numpy\n" + CELL
    assert train(shell, "--edge $EDGE --budget 8 --local", cell).error_in_exec is None
    assert "rapha: warning: line 2: edge fake-edge has no module numpy: the job there would fail" in (
        capsys.readouterr().out)
    before = len(listing.jobs)
    outcome = train(shell, "--edge $EDGE --budget 8", cell)
    assert isinstance(outcome.error_in_exec, RaphaCellError)
    text = "".join(capsys.readouterr()) + "\n".join(outcome.error_in_exec._render_traceback_())
    assert "preflight stopped the cell" in text and "line 2: edge fake-edge has no module numpy" in text
    assert len(listing.jobs) == before


def test_local_with_a_schema_still_runs_when_the_edge_does_not_answer(shell, capsys):
    schema = json.dumps(SCHEMA).replace(" ", "")
    assert train(shell, f"--edge http://127.0.0.1:9 --budget 8 --local --schema {schema}").error_in_exec is None
    out = capsys.readouterr().out
    assert "rapha: warning: the edge's environment was not compared with this kernel's" in out
    assert "local dry run on 8 synthetic records" in out
