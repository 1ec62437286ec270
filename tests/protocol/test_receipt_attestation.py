"""`verify_receipt` (and so `rapha verify`) re-checks the attestation quote a receipt carries: bound to this receipt's
request and edge key, signed (the software stand-in) by the edge key, and labelled unsafe."""

from __future__ import annotations

import base64
import copy
import hashlib
import json

import pytest

from jupyter_rapha.cli import main
from jupyter_rapha.protocol.attestation import (RuntimeMeasurement, binding_commitment, make_software_quote,
                                                report_data_for)
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.receipt import sha256_hex, sign_receipt, verify_receipt
from jupyter_rapha.protocol.receipt_attestation import check_attestation
from jupyter_rapha.verify import verify_document
from tests.receipts.receipt_factory import METRICS, WEIGHTS, predicate

EDGE = PrivateKey.generate()
RUNTIME = RuntimeMeasurement("a" * 64, "b" * 64, "c" * 64)


def evidence_for(request_sha256: str, key: PrivateKey = EDGE, nonce: str = "n" * 32) -> dict:
    commitment = binding_commitment(nonce, request_sha256, key.key_id, RUNTIME)
    quote = make_software_quote(report_data_for(commitment), RUNTIME.to_dict(), key)
    return {"backend": "unsafe_software", "outcome": "unsafe", "quote_sha256": hashlib.sha256(quote).hexdigest(),
            "quote": base64.b64encode(quote).decode(), "tcb_status": "none (unsafe software backend)",
            "debug": False, "commitment": commitment, "unsafe": "unsafe: software stand-in, no hardware isolation"}


def attested_predicate(job_number: int, **evidence_args) -> dict:
    value = predicate(f"{job_number:032x}")
    request = hashlib.sha256(f"request {job_number}".encode()).hexdigest()
    value["job"]["request_sha256"] = request
    value["edge"]["key_id"] = EDGE.key_id
    value["receipt_version"] = "1.1"
    value["evidence"] = {"attestation": evidence_for(request, **evidence_args)}
    return value


def receipt(value: dict) -> dict:
    return sign_receipt(value, sha256_hex(WEIGHTS), EDGE)


def attestation_check(document: dict, require_tee: bool = False):
    report = verify_document(document, EDGE.public, weights=WEIGHTS, metrics=METRICS, offline=True,
                             require_tee=require_tee)
    return report, next(c for c in report.checks if c.name == "attestation")


def test_software_quote_bound_to_this_job_is_a_warning_that_passes():
    report, check = attestation_check(receipt(attested_predicate(1)))
    assert check.status == "warn" and check.detail.startswith("UNSAFE software stand-in (demo only)")
    assert report.passed and report.outcome == "ok"
    report, check = attestation_check(receipt(attested_predicate(1)), require_tee=True)
    assert check.status == "fail" and "--require-tee" in check.detail and not report.passed


def test_the_pure_verifier_alone_re_checks_the_quote():
    # A reviewer calling verify_receipt, with no file or chain I/O around it, gets the same
    # attestation line as rapha verify, before the anchor's lines.
    document = receipt(attested_predicate(11))
    result = verify_receipt(document, EDGE.public, weights=WEIGHTS, metrics=METRICS)
    names = [c.name for c in result.checks]
    assert names.index("attestation") < names.index("anchor")
    assert [c.status for c in result.checks if c.name == "attestation"] == ["warn"]
    assert result.ok(allow_skipped=True)
    strict = verify_receipt(document, EDGE.public, weights=WEIGHTS, metrics=METRICS, require_tee=True)
    assert [c.status for c in strict.checks if c.name == "attestation"] == ["fail"]
    assert not strict.ok(allow_skipped=True)
    swapped = attested_predicate(12)
    swapped["evidence"] = attested_predicate(13)["evidence"]
    borrowed = verify_receipt(receipt(swapped), EDGE.public, weights=WEIGHTS, metrics=METRICS)
    assert [c.status for c in borrowed.checks if c.name == "attestation"] == ["fail"]


def test_tampered_quote_fails():
    value = attested_predicate(2)
    quote = bytearray(base64.b64decode(value["evidence"]["attestation"]["quote"]))
    quote[quote.index(b'"report_data":"') + 20] ^= 0x01  # one hex digit of the report data
    tampered = copy.deepcopy(value)
    tampered["evidence"]["attestation"].update(quote=base64.b64encode(bytes(quote)).decode(),
                                               quote_sha256=hashlib.sha256(bytes(quote)).hexdigest())
    _, check = attestation_check(receipt(tampered))
    assert check.status == "fail" and "does not verify" in check.detail
    value["evidence"]["attestation"]["quote"] = base64.b64encode(bytes(quote)).decode()  # digest left as it was
    _, check = attestation_check(receipt(value))
    assert check.status == "fail" and "does not match its recorded digest" in check.detail


def test_quote_from_another_receipt_fails_the_binding():
    first, second = attested_predicate(3), attested_predicate(4)
    first["evidence"], second["evidence"] = second["evidence"], first["evidence"]
    for swapped in (first, second):
        _, check = attestation_check(receipt(swapped))
        assert check.status == "fail" and "bound to another request" in check.detail


def test_commitment_rewritten_to_this_job_no_longer_matches_the_quote():
    first, second = attested_predicate(5), attested_predicate(6)
    borrowed = copy.deepcopy(second["evidence"])
    borrowed["attestation"]["commitment"]["request_sha256"] = first["job"]["request_sha256"]
    first["evidence"] = borrowed
    _, check = attestation_check(receipt(first))
    assert check.status == "fail" and "report_data" in check.detail


def test_quote_by_another_key_or_for_another_edge_key_fails():
    other = PrivateKey.generate()
    _, check = attestation_check(receipt(attested_predicate(7, key=other)))
    assert check.status == "fail" and "another edge key" in check.detail


def test_missing_evidence_warns_unless_a_tee_is_required():
    old = predicate("8" * 32)  # a receipt 1.0: no evidence section
    assert check_attestation(old, EDGE.public).status == "warn"
    assert check_attestation(old, EDGE.public, require_tee=True).status == "fail"
    empty = {**old, "evidence": {"attestation": {}}}
    assert "no attestation quote" in check_attestation(empty, EDGE.public).detail


@pytest.mark.parametrize("quote", ["not base64!", ""])
def test_malformed_quote_field(quote):
    value = attested_predicate(9)
    value["evidence"]["attestation"]["quote"] = quote
    assert check_attestation(value, EDGE.public).status in (("fail",) if quote else ("warn",))


def test_cli_prints_the_attestation_line_and_require_tee(tmp_path, capsys):
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt(attested_predicate(10))))
    (tmp_path / "edge.pub").write_text(EDGE.public.to_text())
    skip = ["--skip-weights", "--skip-metrics"]  # a receipt made for this test, with no outputs beside it
    assert main(["verify", str(path), "--offline", *skip]) == 0
    out = capsys.readouterr().out
    assert "WARN attestation  UNSAFE software stand-in (demo only)" in out
    assert main(["verify", str(path), "--offline", "--require-tee", *skip]) == 1
    assert "FAIL attestation  UNSAFE software stand-in" in capsys.readouterr().out
    assert main(["verify", str(path), "--offline", "--json", *skip]) == 0
    checks = json.loads(capsys.readouterr().out)[0]["checks"]
    attestation = next(c for c in checks if c["name"] == "attestation")
    assert {"name": "attestation", "status": "warn"}.items() <= attestation.items()
