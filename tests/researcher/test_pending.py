"""Receipts released with their anchor pending (the edge's chain down): `rapha run` and the
magic keep the outputs and say how to fetch the anchored receipt later; `rapha fetch` and
`%rapha_attach` pick it up once the edge has anchored it."""

from __future__ import annotations

import json

import pytest
from IPython.core.interactiveshell import InteractiveShell

from jupyter_rapha.cli import main
from jupyter_rapha.keystore import create_key
from jupyter_rapha.protocol.keys import PrivateKey
from tests.researcher.fake_edge import FakeEdge

CELL = """
import torch
model = torch.nn.Linear(1024, 2)
for batch in rapha.loader(batch_size=8):
    loss = torch.nn.functional.cross_entropy(model(batch["image"].flatten(1)), batch["finding"])
rapha.log(loss=loss.item())
rapha.save(model)
"""


@pytest.fixture
def world(tmp_path):
    key_path = tmp_path / "me.pem"
    key = create_key(key_path)
    cell = tmp_path / "cell.py"
    cell.write_text(CELL)
    (tmp_path / "edge").mkdir()
    with FakeEdge([key.public], tmp_path / "edge") as edge:
        edge.anchor_pending = True
        yield edge, key_path, cell, tmp_path


def run(edge, key_path, cell, out) -> int:
    return main(["run", str(cell), "--edge", edge.url, "--dataset", "synthetic-cxr", "--budget", "8",
                 "--key", str(key_path), "--out", str(out)])


def test_run_keeps_outputs_when_the_anchor_is_pending_then_fetch_gets_the_anchor(world, capsys):
    edge, key_path, cell, root = world
    out = root / "out"
    assert run(edge, key_path, cell, out) == 3
    text = capsys.readouterr().out
    job_id = next(iter(edge.jobs))
    assert "anchor pending" in text and f"rapha fetch {job_id} --edge {edge.url} --out {out}" in text
    assert sorted(p.name for p in out.iterdir()) == ["edge.pub", "metrics.json", "receipt.json", "weights.safetensors"]
    assert json.loads((out / "receipt.json").read_text())["anchor"]["status"] == "pending"
    assert main(["verify", str(out / "receipt.json"), "--rpc", edge.url + "/chain"]) == 3

    fetch = ["fetch", job_id, "--edge", edge.url, "--key", str(key_path), "--out", str(out)]
    assert main(fetch) == 3  # still pending: nothing changed at the edge
    assert edge.anchor_pending_receipts() == 1
    assert main(fetch) == 0
    assert "tx_hash" in json.loads((out / "receipt.json").read_text())["anchor"]
    assert main(["verify", str(out / "receipt.json"), "--rpc", edge.url + "/chain"]) == 0


def test_fetch_refuses_an_edge_key_other_than_the_saved_one(world, capsys):
    edge, key_path, cell, root = world
    out = root / "out"
    assert run(edge, key_path, cell, out) == 3
    (out / "edge.pub").write_text(PrivateKey.generate().public.to_text() + "\n")
    code = main(["fetch", next(iter(edge.jobs)), "--edge", edge.url, "--key", str(key_path), "--out", str(out)])
    assert code == 1 and "other than the saved edge.pub" in capsys.readouterr().err


def test_fetch_unknown_job_and_foreign_out_dir(world, capsys):
    edge, key_path, _, root = world
    assert main(["fetch", "0" * 32, "--edge", edge.url, "--key", str(key_path), "--out", str(root / "o")]) == 1
    (root / "mine").mkdir()
    (root / "mine" / "notes.txt").write_text("x")
    assert main(["fetch", "0" * 32, "--edge", edge.url, "--key", str(key_path), "--out", str(root / "mine")]) == 1
    assert (root / "mine" / "notes.txt").read_text() == "x"


def test_magic_returns_a_pending_result_and_attach_refreshes_it(world, capsys):
    edge, key_path, _, _ = world
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_rapha")
    ip.user_ns.update({"EDGE": edge.url, "KEY": str(key_path)})
    outcome = ip.run_cell(f"%%rapha_train --edge $EDGE --key $KEY --dataset synthetic-cxr --budget 8\n{CELL}")
    assert outcome.error_in_exec is None
    result = ip.user_ns["_rapha_result"]
    assert not result.verified and result.receipt_widget.pending and result.state_dict
    assert "anchor pending" in result._repr_html_() and "PENDING" in repr(result)
    text = capsys.readouterr().out
    assert f"anchor pending: fetch the receipt again later with %rapha_attach {result.job_id}" in text

    edge.anchor_pending_receipts()
    ip.run_line_magic("rapha_attach", f"{result.job_id} --edge {edge.url} --key {key_path}")
    assert ip.user_ns["_rapha_result"].verified
    ip.user_ns.pop("_rapha_result", None)
