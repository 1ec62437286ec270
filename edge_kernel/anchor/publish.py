"""Putting a late anchor into a released receipt.

The outbox calls ``ReceiptPublisher`` once a receipt's batch is on chain. The receipt the
researcher fetches (``release/receipt.json``, read by GET /v1/jobs/{id}/receipt) is
replaced atomically (write beside, fsync, rename), and then the stored copy in the jobs
table. The same for a mined escrow claim (``settlement_claim``). Only that block changes:
the signed envelope is compared byte for byte first, so a confused outbox can never attach
an anchor or a claim to another receipt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from collections.abc import Callable

from jupyter_rapha.protocol.contract import TERMINAL_STATES, JobState
from jupyter_rapha.protocol.errors import NotFound
from jupyter_rapha.protocol.receipt import envelope_digest

from ..release.files import RECEIPT_FILE, write_atomically


class ReceiptPublisher:
    def __init__(self, store: Any, audit: Any, release_dir: Callable[[str], Path]) -> None:
        self.store, self.audit, self.release_dir = store, audit, release_dir

    def __call__(self, job_id: str, envelope_sha256: str, anchor: dict[str, Any]) -> str:
        return self._put(job_id, envelope_sha256, "anchor", anchor, "anchor.publish")

    def claim(self, job_id: str, envelope_sha256: str, claim: dict[str, Any]) -> str:
        """The mined escrow claim into the released receipt, beside the envelope (the claim
        names the envelope's digest, so it cannot be inside it)."""
        return self._put(job_id, envelope_sha256, "settlement_claim", claim, "settlement.publish")

    def _put(self, job_id: str, envelope_sha256: str, name: str, block: dict[str, Any], event: str) -> str:
        try:
            job = self.store.get(job_id)
        except NotFound:
            return "dropped"
        if job.state in TERMINAL_STATES and job.state != JobState.COMPLETED:
            return "dropped"  # ended without a release (cut off, refused): nothing to update, ever
        if job.state != JobState.COMPLETED or job.receipt is None:
            return "later"  # the release is being written right now
        if envelope_digest(job.receipt["envelope"]) != envelope_sha256:
            return "dropped"
        if job.receipt.get(name) == block:
            return "done"
        document = {**job.receipt, name: block}
        self.audit.append(event, job_id=job_id,
                          detail={"envelope_sha256": envelope_sha256, "tx_hash": block.get("tx_hash")})
        write_atomically(self.release_dir(job_id) / RECEIPT_FILE, json.dumps(document, indent=2).encode())
        self.store.set_receipt(job_id, document)
        return "done"

