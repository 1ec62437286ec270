"""The receipt's disclosure section (predicate 1.3): required from 1.3 on, shown by
``rapha verify`` and the receipt widget, refused when missing, malformed or not a release."""

from __future__ import annotations

import json

import pytest

from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.receipt import PREDICATE_VERSION, sha256_hex, sign_receipt, verify_receipt
from jupyter_rapha.widget import ReceiptWidget
from tests.receipts.receipt_factory import METRICS, WEIGHTS, predicate

DISCLOSURE = {
    "checks": {
        "record_copies": {"records_scanned": 40, "numbers_scanned": 123456, "records_matched": 0,
                          "max_correlation": 0.2113, "seconds": 0.4},
        "membership": {"status": "checked", "auc": 0.5312, "tpr_at_1pct_fpr": 0.025, "records_used": 40,
                       "holdback_size": 50, "attack": "loss_threshold"},
        "capacity": {"parameters": 2050, "records_used": 40, "parameters_per_record": 51.25},
    },
    "holdback_size": 50, "mode": "review", "policy_decision": "review", "rule": "mode_review",
    "reasons": ["the dataset's release mode is review: output checkers decide"], "decision": "release",
    "reviews": [{"checker_key_id": "checker-key-1", "decision": "approve", "reason": "aggregate model",
                 "statement_sha256": "d" * 64}],
}


@pytest.fixture(scope="module")
def edge_key():
    return PrivateKey.generate()


def signed(edge_key, **changes):
    value = {**predicate(), "receipt_version": PREDICATE_VERSION, "disclosure": DISCLOSURE, **changes}
    value = {k: v for k, v in value.items() if v is not None}
    return sign_receipt(value, sha256_hex(WEIGHTS), edge_key)


def line(result, name="disclosure"):
    return next(((c.status, c.detail) for c in result.checks if c.name == name), None)


def test_the_edge_writes_version_1_3_or_later():
    assert PREDICATE_VERSION.startswith("1.") and int(PREDICATE_VERSION.split(".")[1]) >= 3


def test_a_released_receipt_shows_each_check_and_who_approved(edge_key):
    result = verify_receipt(signed(edge_key), edge_key.public, weights=WEIGHTS, metrics=METRICS)
    status, detail = line(result)
    assert status == "pass"
    for text in ("released (review, rule mode_review)", "0 of 40 records matched", "max correlation 0.211",
                 "AUC 0.531", "TPR at 1% FPR 0.025 (50 held back)", "51.2 parameters per record",
                 "approved by checker-key-1"):
        assert text in detail, (text, detail)


def test_a_1_3_receipt_without_disclosure_fails(edge_key):
    result = verify_receipt(signed(edge_key, disclosure=None), edge_key.public)
    assert line(result) == ("fail", "the receipt has no disclosure section")
    assert not result.ok(allow_skipped=True)


@pytest.mark.parametrize("version", ["1.4", "1.27"])
def test_later_minors_need_it_too(edge_key, version):
    result = verify_receipt(signed(edge_key, disclosure=None, receipt_version=version), edge_key.public)
    assert line(result)[0] == "fail"


@pytest.mark.parametrize("version", [1, "1.1", "1.2"])
def test_older_receipts_verify_as_before_with_no_disclosure_line(edge_key, version):
    result = verify_receipt(signed(edge_key, disclosure=None, receipt_version=version), edge_key.public,
                            weights=WEIGHTS, metrics=METRICS)
    assert line(result) is None and result.ok(allow_skipped=True)


@pytest.mark.parametrize("section", [
    "released", [],
    {**DISCLOSURE, "decision": "refuse"},
    {**DISCLOSURE, "checks": {k: v for k, v in DISCLOSURE["checks"].items() if k != "membership"}},
    {**DISCLOSURE, "checks": {**DISCLOSURE["checks"], "record_copies": {"records_matched": "none"}}},
    {**DISCLOSURE, "rule": None},
    {**DISCLOSURE, "reviews": [{"checker_key_id": "x", "decision": "maybe"}]},
])
def test_a_malformed_section_fails(edge_key, section):
    result = verify_receipt(signed(edge_key, disclosure=section), edge_key.public)
    assert line(result)[0] == "fail"


def test_the_widget_shows_the_disclosure_line(edge_key):
    document = signed(edge_key)
    widget = ReceiptWidget(document, verify_receipt(document, edge_key.public, weights=WEIGHTS, metrics=METRICS))
    assert "disclosure    released (review, rule mode_review)" in widget.text()
    assert "<th style='text-align:left;padding-right:1em'>disclosure</th><td>released" in widget._repr_html_()


def test_the_verify_cli_prints_it(edge_key, tmp_path, capsys):
    from jupyter_rapha.cli import main

    (tmp_path / "receipt.json").write_text(json.dumps(signed(edge_key)))
    (tmp_path / "weights.safetensors").write_bytes(WEIGHTS)
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    main(["verify", str(tmp_path / "receipt.json"), "--edge-key", edge_key.public.to_text(), "--offline"])
    out = capsys.readouterr().out
    assert "disclosure" in out and "0 of 40 records matched" in out, out
