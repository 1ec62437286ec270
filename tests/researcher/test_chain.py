"""observe_anchor against a real chain served over loopback HTTP, checked with the pure
receipt verifier; and every way the read can fail."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import http.server
import socket
import threading

import pytest
from eth_account import Account

from edge_kernel.anchor.devchain import EmbeddedChain
from edge_kernel.anchor.rpcserver import serve_chain
from jupyter_rapha.chain import observe_anchor
from jupyter_rapha.protocol.errors import AnchorFault
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.receipt import _anchor_matches, envelope_digest, sha256_hex, sign_receipt, verify_receipt

WEIGHTS = b"weights"


def predicate(address: str, chain_id: int) -> dict:
    return {"receipt_version": 1, "job": {"id": "j" * 32},
            "edge": {"id": "edge", "key_id": "k", "anchor_address": address, "chain_id": chain_id},
            "dataset": {"id": "d", "records_used": 3}, "budget": {"max_records": 3}, "settlement": {"amount": "0"},
            "outputs": {"weights": {"sha256": sha256_hex(WEIGHTS), "bytes": len(WEIGHTS)}, "metrics": {"sha256": ""}},
            "metrics": {}, "gates": [], "unsafe": [], "times": {}}


@pytest.fixture
def served(tmp_path):
    account = Account.create()
    chain = EmbeddedChain(tmp_path / "chain", account)
    with serve_chain(chain) as server:
        yield chain, server.url


@pytest.fixture
def anchored(served):
    """A signed receipt anchored on the served chain: (edge key, document, chain, url)."""
    chain, url = served
    key = PrivateKey.generate()
    document = sign_receipt(predicate(chain.address, chain.chain_id), sha256_hex(WEIGHTS), key)
    digest = envelope_digest(document["envelope"])
    document["anchor"] = {**chain.anchor(bytes.fromhex(digest)), "envelope_sha256": digest}
    return key, document, chain, url


def test_anchored_receipt_verifies_through_stock_web3(anchored):
    key, document, chain, url = anchored
    observation = observe_anchor(url, document["anchor"]["tx_hash"])
    assert observation.sender == chain.address and observation.block_number == document["anchor"]["block_number"]
    result = verify_receipt(document, key.public, weights=WEIGHTS, anchor=observation)
    assert result.ok(), result.checks
    assert [c.status for c in result.checks if c.name == "anchor"] == ["pass"]


def test_another_transaction_does_not_confirm_the_receipt(anchored):
    key, document, chain, url = anchored
    other = chain.anchor(hashlib.sha256(b"another envelope").digest())
    observation = observe_anchor(url, other["tx_hash"])
    assert not verify_receipt(document, key.public, anchor=observation).ok()
    # even when the anchor is edited to name that transaction, its data is another digest
    forged = dict(document["anchor"], tx_hash=other["tx_hash"], block_number=other["block_number"])
    predicate_ = verify_receipt(document, key.public).predicate
    ok, detail = _anchor_matches(forged, predicate_, observation, forged["envelope_sha256"], 1)
    assert not ok and "data" in detail


def test_tampered_envelope_no_longer_matches_its_anchor(anchored):
    key, document, _, url = anchored
    observation = observe_anchor(url, document["anchor"]["tx_hash"])
    tampered = copy.deepcopy(document)
    tampered["anchor"]["envelope_sha256"] = sha256_hex(b"other")
    assert not verify_receipt(tampered, key.public, anchor=observation).ok()
    for change in ({"data": bytes(32)}, {"sender": "0x" + "00" * 20}, {"block_number": None},
                   {"chain_id": 1}, {"head_block": observation.block_number - 1}):
        forged = dataclasses.replace(observation, **change)
        assert not verify_receipt(document, key.public, anchor=forged).ok(), change


def test_unknown_transaction_is_reported_as_not_found(served):
    _, url = served
    with pytest.raises(AnchorFault, match="not found"):
        observe_anchor(url, "0x" + "12" * 32)


@pytest.mark.parametrize("bad", ["", "0x12", "12" * 32, "0x" + "zz" * 32, None])
def test_malformed_transaction_hash_is_refused(bad):
    with pytest.raises(AnchorFault, match="malformed"):
        observe_anchor("http://127.0.0.1:9/chain", bad)


def test_unreachable_endpoint():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(AnchorFault, match="unreachable"):
        observe_anchor(f"http://127.0.0.1:{port}/chain", "0x" + "12" * 32, timeout=2)


def test_silent_endpoint_times_out():
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/chain"
        with pytest.raises(AnchorFault, match="did not answer within 0.3 s"):
            observe_anchor(url, "0x" + "12" * 32, timeout=0.3)


def test_endpoint_answering_garbage():
    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "9")
            self.end_headers()
            self.wfile.write(b"not json!")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Garbage)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        with pytest.raises(AnchorFault) as caught:
            observe_anchor(f"http://127.0.0.1:{server.server_address[1]}/", "0x" + "12" * 32, timeout=2)
        assert "unusable" in caught.value.message
    finally:
        server.shutdown()
        server.server_close()


def test_non_http_url_is_refused():
    with pytest.raises(AnchorFault, match="http"):
        observe_anchor("file:///etc/passwd", "0x" + "12" * 32)
