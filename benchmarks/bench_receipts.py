"""Receipt verification without chain access: median over many runs against a 2 ms goal.

The receipt is what a real edge writes: a signed in-toto Statement in DSSE with a
realistic predicate (metrics of 4 series x 50 epochs), anchored in a batch of 100, so
the check covers format, Ed25519 signature, statement parse and the inclusion proof.
A second figure adds the outputs beside the receipt (1 MB weights, metrics) and reading
the files, as `rapha verify --offline DIR/receipt.json` does.

Run: python benchmarks/bench_receipts.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jupyter_rapha.protocol.anchor_proof import batch_anchor, batch_tree  # noqa: E402
from jupyter_rapha.protocol.keys import PrivateKey  # noqa: E402
from jupyter_rapha.protocol.receipt import envelope_digest, metrics_digest, sha256_hex, sign_receipt  # noqa: E402
from jupyter_rapha.verify import verify_document, verify_receipt_file  # noqa: E402

GOAL_MS = 2.0
BATCH = 100


def sample(key: PrivateKey, weights: bytes) -> tuple[dict, dict]:
    metrics = {name: [round(1 / (i + 1 + k), 6) for i in range(50)] for k, name in
               enumerate(("loss", "val_loss", "accuracy", "auc"))}
    predicate = {
        "receipt_version": 1,
        "job": {"id": "a" * 32, "researcher_key_id": "b" * 32, "code_sha256": "c" * 64, "request_sha256": "d" * 64,
                "params": {"epochs": 50, "lr": 0.001}},
        "edge": {"id": "st-marys-radiology", "key_id": key.key_id, "anchor_address": "0x" + "ab" * 20, "chain_id": 137},
        "dataset": {"id": "cxr", "version": "3", "fields": ["image", "finding"], "records_used": 4000,
                    "records_root": "e" * 64, "cohort_size": 5000, "skipped": {"no_consent": 12}},
        "budget": {"max_records": 5000, "max_seconds": 3600},
        "settlement": {"price_per_record": "0.05", "currency": "GBP", "records": 4000, "amount": "200.00"},
        "outputs": {"weights": {"sha256": sha256_hex(weights), "bytes": len(weights), "tensors": 12},
                    "metrics": {"sha256": metrics_digest(metrics), "names": sorted(metrics)}},
        "metrics": metrics,
        "gates": [{"name": n, "outcome": "pass", "evidence_sha256": "f" * 64}
                  for n in ("spec", "scan", "attestation", "airgap", "policy", "release")],
        "unsafe": [], "times": {"submitted": "2026-01-01T00:00:00Z", "started": "x", "finished": "y"},
    }
    document = sign_receipt(predicate, sha256_hex(weights), key)
    digests = [envelope_digest(document["envelope"])] + [sha256_hex(bytes([i])) for i in range(BATCH - 1)]
    tree = batch_tree(digests)  # leaf 0 has the longest proof path (7 hashes for 100 leaves)
    document["anchor"] = batch_anchor(tree, 0, chain_id=137, tx_hash="0x" + "12" * 32, block_number=9)
    return document, metrics


def timed(runs: int, check) -> list[float]:
    check()  # warm
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        report = check()
        samples.append((time.perf_counter() - start) * 1000)
        assert report.passed, [(c.name, c.status, c.detail) for c in report.checks]
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=500)
    runs = parser.parse_args().runs
    key, weights = PrivateKey.generate(), os.urandom(1 << 20)
    document, metrics = sample(key, weights)
    receipt_only = timed(runs, lambda: verify_document(document, key.public, offline=True))
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        (out / "receipt.json").write_text(json.dumps(document, indent=2))
        (out / "weights.safetensors").write_bytes(weights)
        (out / "metrics.json").write_text(json.dumps(metrics))
        with_files = timed(max(runs // 5, 20),
                           lambda: verify_receipt_file(out / "receipt.json", key.public, offline=True))
    median = statistics.median(receipt_only)
    print(f"receipt: {len(json.dumps(document))} bytes, batch of {BATCH}, "
          f"proof of {len(document['anchor']['batch']['proof'])} hashes, runs: {runs}")
    print(f"verify (format, signature, statement, inclusion) median {median:.3f} ms, "
          f"p90 {statistics.quantiles(receipt_only, n=10)[-1]:.3f} ms "
          f"(goal {GOAL_MS:.0f} ms, ratio {median / GOAL_MS:.2f})")
    print(f"verify from files with 1 MB weights and metrics median {statistics.median(with_files):.3f} ms "
          f"(ratio to goal {statistics.median(with_files) / GOAL_MS:.2f})")


if __name__ == "__main__":
    main()
