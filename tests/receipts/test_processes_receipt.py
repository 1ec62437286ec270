"""A distributed job's receipt names its process count (``job.processes``, there only
above 1) and the seccomp variant its air-gap evidence was taken under; ``rapha verify``
shows the count, and a malformed one fails the statement check."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edge_kernel.gates.pipeline import GateResult
from edge_kernel.release.receipts import gate_evidence, job_entry
from jupyter_rapha.protocol.jobspec import parse_jobspec
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.receipt import sha256_hex, sign_receipt, verify_receipt
from jupyter_rapha.verify import format_report, report_dict, verify_document
from tests.protocol.test_jobspec import spec_dict
from tests.receipts.receipt_factory import WEIGHTS, predicate


def test_the_job_entry_carries_the_count_only_above_one():
    spec = parse_jobspec(spec_dict())
    assert "processes" not in job_entry(spec, "r" * 64)
    assert job_entry(replace(spec, processes=2), "r" * 64)["processes"] == 2


def test_the_airgap_evidence_names_the_filter_and_its_measured_digest():
    probe = {"seccomp": {"filter_sha256": "ab" * 32, "filter": "inet-loopback"}}
    result = GateResult("airgap", "pass", {"sealed": True, "binary_sha256": "b" * 64, "probe_sha256": "p" * 64,
                                           "probe": probe, "socket_filter": "inet-loopback"})
    airgap = gate_evidence([result])["airgap"]
    assert airgap["socket_filter"] == "inet-loopback" and airgap["filter_sha256"] == "ab" * 32
    assert "probe" not in airgap


def test_rapha_verify_shows_the_count():
    key = PrivateKey.generate()
    body = predicate()
    body["job"] = dict(body["job"], processes=2)
    report = verify_document(sign_receipt(body, sha256_hex(WEIGHTS), key), key.public, offline=True)
    assert ("statement", "pass") in [(c.name, c.status) for c in report.checks]
    assert any(line.startswith("processes 2: ranks of one torch.distributed group") for line in format_report(report))
    assert report_dict(report)["processes"] == 2


@pytest.mark.parametrize("bad", [1, 0, "2", True, None])
def test_a_malformed_count_fails_the_statement_check(bad):
    key = PrivateKey.generate()
    body = predicate()
    body["job"] = dict(body["job"], processes=bad)
    report = verify_receipt(sign_receipt(body, sha256_hex(WEIGHTS), key), key.public)
    failed = [c for c in report.checks if c.status == "fail"]
    assert failed and failed[0].name == "statement" and "job.processes" in failed[0].detail
