"""ReceiptWidget: what it shows, and that receipt text cannot inject markup."""

from __future__ import annotations

import json

from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.receipt import sign_receipt
from jupyter_rapha.verify import verify_document
from jupyter_rapha.widget import ReceiptWidget

EDGE_KEY = PrivateKey.generate()


def receipt(dataset_name: str = "synthetic-cxr", gates=None):
    predicate = {
        "receipt_version": 1, "job": {"id": "ab" * 16, "code_sha256": "c" * 64},
        "edge": {"id": "e", "chain_id": 1, "anchor_address": "0x0"},
        "dataset": {"id": dataset_name, "version": "1", "records_used": 48, "records_root": "d" * 64},
        "budget": {"max_records": 48}, "settlement": {"amount": "4.80", "currency": "GBP", "price_per_record": "0.10"},
        "outputs": {"weights": {"sha256": "e" * 64, "bytes": 10}, "metrics": {"sha256": "f" * 64}},
        "metrics": {}, "unsafe": ["unsafe_no_airgap"], "times": {},
        "gates": gates if gates is not None else [
            {"name": "spec", "outcome": "pass", "evidence_sha256": "1" * 64},
            {"name": "policy", "outcome": "absent", "evidence_sha256": "2" * 64},
            {"name": "attestation", "outcome": "unsafe", "evidence_sha256": "3" * 64}],
    }
    document = sign_receipt(predicate, "e" * 64, EDGE_KEY)
    document["anchor"] = {"tx_hash": "0x" + "9" * 64, "block_number": 7, "chain_id": 1, "envelope_sha256": "x"}
    return document


def test_html_shows_the_essentials():
    document = receipt()
    html = ReceiptWidget(document, verify_document(document, EDGE_KEY.public, offline=True))._repr_html_()
    for text in ("ababababab", "synthetic-cxr v1", "48", "4.80 GBP", "absent", "unsafe_no_airgap", "block 7",
                 "signature", "0x9999999999…"):
        assert text in html
    assert "background:#fff1a8" in html and "<script" not in html
    assert ("d" * 64) not in html.split("title=")[0]  # hashes shortened in the visible text


def test_failed_verification_is_marked():
    document = receipt()
    bad = verify_document(document, PrivateKey.generate().public, offline=True)
    widget = ReceiptWidget(document, bad)
    assert not widget.verified and "not verified" in widget._repr_html_() and "&#10007;" in widget._repr_html_()
    assert "not verified" in repr(widget) and "FAIL" in repr(widget)


def test_no_verification_is_not_verified():
    widget = ReceiptWidget(receipt(), None)
    assert not widget.verified and "not verified" in widget._repr_html_()


def test_receipt_text_is_escaped():
    document = receipt(dataset_name="<img src=x onerror=alert(1)>",
                       gates=[{"name": "<b>x</b>", "outcome": "pass", "evidence_sha256": "'><script>"}])
    html = ReceiptWidget(document, verify_document(document, EDGE_KEY.public, offline=True))._repr_html_()
    assert "<img" not in html and "<script" not in html and "<b>x</b>" not in html


def test_text_repr_lists_gates_and_checks():
    document = receipt()
    text = repr(ReceiptWidget(document, verify_document(document, EDGE_KEY.public, offline=True)))
    assert "gate attestation: unsafe  <-- UNSAFE" in text and "PASS    signature" in text


def test_empty_or_garbage_receipt_renders():
    for document in ({}, {"envelope": {"payload": "!!"}}, json.loads("null") or {}):
        widget = ReceiptWidget(document, verify_document(document, EDGE_KEY.public, offline=True))
        assert "not verified" in widget._repr_html_()
