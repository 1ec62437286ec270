"""`rapha verify` on batch-anchored, pending and broken receipts: one line per check,
--json, many receipts at once, --offline, and exit codes 0 / 1 / 3."""

from __future__ import annotations

import json

import pytest
from eth_account import Account

from edge_kernel.anchor.devchain import EmbeddedChain
from edge_kernel.anchor.outbox import Outbox, OutboxConfig
from edge_kernel.anchor.rpcserver import serve_chain
from edge_kernel.db import Database
from jupyter_rapha.cli import main, verify_exit_code
from jupyter_rapha.protocol.anchor_proof import pending_anchor
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.receipt import envelope_digest, sha256_hex, sign_receipt
from tests.receipts.receipt_factory import METRICS, WEIGHTS, predicate


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three receipts side by side: anchored (batch of 2), pending, tampered; and the chain URL."""
    root = tmp_path_factory.mktemp("receipts")
    chain = EmbeddedChain(root / "chain", Account.create())
    key = PrivateKey.generate()
    docs = [sign_receipt(predicate(f"{i:032x}", chain.address, chain.chain_id), sha256_hex(WEIGHTS), key)
            for i in range(3)]
    anchors: dict[str, dict] = {}
    outbox = Outbox(Database(root / "edge.sqlite"), chain, lambda j, d, a: anchors.setdefault(d, a) and "done",
                    OutboxConfig(batch_interval_seconds=60))
    for doc in docs[:2]:
        outbox.enqueue("j" * 32, envelope_digest(doc["envelope"]))
    outbox.flush()
    outbox.step()
    docs[0]["anchor"] = anchors[envelope_digest(docs[0]["envelope"])]
    docs[1]["anchor"] = pending_anchor(envelope_digest(docs[1]["envelope"]))
    docs[2]["anchor"] = dict(anchors[envelope_digest(docs[1]["envelope"])])  # another receipt's anchor
    paths = {}
    for name, doc in zip(("anchored", "pending", "borrowed"), docs, strict=True):
        directory = root / name
        directory.mkdir()
        (directory / "receipt.json").write_text(json.dumps(doc))
        (directory / "edge.pub").write_text(key.public.to_text())
        (directory / "weights.safetensors").write_bytes(WEIGHTS)
        (directory / "metrics.json").write_text(json.dumps(METRICS))
        paths[name] = str(directory / "receipt.json")
    with serve_chain(chain) as server:
        yield paths, server.url


def test_anchored_passes_one_line_per_check(folder, capsys):
    paths, url = folder
    assert main(["verify", paths["anchored"], "--rpc", url]) == 0
    out = capsys.readouterr().out.splitlines()
    checks = [line.split()[:2] for line in out if line[:4] in ("PASS", "FAIL", "SKIP", "WAIT")]
    names = ("format", "signature", "statement", "weights", "metrics", "inclusion", "anchor")
    assert checks == [["PASS", n] for n in names]
    assert out[-1].startswith("OK: ")


def test_pending_is_told_apart_with_exit_3(folder, capsys):
    paths, url = folder
    assert main(["verify", paths["pending"], "--rpc", url]) == 3
    out = capsys.readouterr().out
    assert "WAIT anchor" in out and "ANCHOR PENDING:" in out and "FAIL" not in out
    assert main(["verify", paths["pending"], "--offline"]) == 3


def test_borrowed_anchor_fails_with_exit_1(folder, capsys):
    paths, url = folder
    assert main(["verify", paths["borrowed"], "--rpc", url]) == 1
    assert "FAIL anchor" in capsys.readouterr().out


def test_many_at_once_json(folder, capsys):
    paths, url = folder
    code = main(["verify", paths["anchored"], paths["pending"], paths["borrowed"], "--rpc", url, "--json"])
    assert code == 1
    result = json.loads(capsys.readouterr().out)
    assert [r["outcome"] for r in result] == ["ok", "pending", "failed"]
    assert {c["name"]: c["status"] for c in result[1]["checks"]}["anchor"] == "pending"


def test_many_at_once_text_summary(folder, capsys):
    paths, url = folder
    assert main(["verify", paths["anchored"], paths["pending"], "--rpc", url]) == 3
    assert capsys.readouterr().out.splitlines()[-1] == "2 receipts: 1 OK, 1 anchor pending, 0 FAILED"


def test_offline_checks_inclusion_without_chain(folder, capsys):
    paths, _ = folder
    assert main(["verify", paths["anchored"], "--offline", "--json"]) == 0
    checks = {c["name"]: c["status"] for c in json.loads(capsys.readouterr().out)[0]["checks"]}
    assert checks["inclusion"] == "pass" and checks["anchor"] == "skipped"


def test_confirmation_depth_option(folder, capsys):
    paths, url = folder
    assert main(["verify", paths["anchored"], "--rpc", url, "--confirmations", "50"]) == 1
    assert "confirmations, 50 required" in capsys.readouterr().out
    assert main(["verify", paths["anchored"], "--rpc", url, "--confirmations", "0"]) == 2


def test_exit_code_precedence():
    assert verify_exit_code(["ok", "ok"]) == 0
    assert verify_exit_code(["ok", "pending"]) == 3
    assert verify_exit_code(["pending", "failed"]) == 1
