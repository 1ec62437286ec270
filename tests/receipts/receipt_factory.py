"""Signed receipts for tests, with the predicate fields the verifier requires."""

from __future__ import annotations

from typing import Any

from jupyter_rapha.protocol.receipt import metrics_digest, sha256_hex

WEIGHTS = b"weights-bytes"
METRICS = {"loss": [0.9, 0.7, 0.55, 0.41, 0.38], "accuracy": [0.5, 0.6, 0.7, 0.74, 0.8]}
ADDRESS = "0x00000000000000000000000000000000000000aa"


def predicate(job_id: str = "j" * 32, address: str = ADDRESS, chain_id: int = 1337) -> dict[str, Any]:
    return {"receipt_version": 1,
            "job": {"id": job_id, "code_sha256": "c0de" * 16, "researcher_key_id": "r" * 32},
            "edge": {"id": "edge-1", "key_id": "k", "anchor_address": address, "chain_id": chain_id},
            "dataset": {"id": "synthetic-cxr", "version": "1", "records_used": 40, "records_root": "ab" * 32},
            "budget": {"max_records": 40},
            "settlement": {"amount": "2.00", "currency": "GBP", "price_per_record": "0.05", "records": 40},
            "outputs": {"weights": {"sha256": sha256_hex(WEIGHTS), "bytes": len(WEIGHTS), "tensors": 2},
                        "metrics": {"sha256": metrics_digest(METRICS), "names": sorted(METRICS)}},
            "metrics": METRICS,
            "gates": [{"name": "spec", "outcome": "pass", "evidence_sha256": "11" * 32},
                      {"name": "attestation", "outcome": "unsafe", "evidence_sha256": "22" * 32},
                      {"name": "policy", "outcome": "absent", "evidence_sha256": "33" * 32}],
            "unsafe": ["unsafe_software_attestation"], "times": {}}
