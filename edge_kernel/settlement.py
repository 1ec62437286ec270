"""Settlement on chain, in a job's life: the escrow lock checked before a job runs, the
claim of the records used at release, and a full refund for a job that ends without one.

On an edge with ``chain.settlement`` on, a job on a dataset whose price is above zero runs
only when the escrow contract holds a lock for it (``protocol.escrow.job_key`` of the job
id, which the researcher signed and chose before submitting) from the chain account the
hospital registered with that researcher, at the dataset's price, for at least the job's
record budget, expiring far enough ahead for the job to be run, checked and released.
Anything else, a chain that cannot be read included, refuses the job (fail closed).

At release the edge claims ``records_used x price`` naming the receipt's envelope digest
through the anchor outbox (after the receipt's anchor; stored signed before it is sent);
the rest of the lock is credited back to the researcher in the same transaction. A job
that ends any other way (denied, failed, cancelled, held outputs refused) claims 0
records, so its whole lock is refunded at once rather than waiting for its expiry; the
researcher's ``cancel`` after expiry stays the way out should the edge never claim.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from jupyter_rapha.protocol.errors import BadInput, RaphaError
from jupyter_rapha.protocol.escrow import from_units, to_units
from jupyter_rapha.protocol.jobspec import JobSpec

from .data.registry import Dataset

log = logging.getLogger(__name__)

# A lock must outlive the job's time budget by this much: the edge still has to check,
# release (held outputs may wait for an output checker) and claim it.
EXPIRY_MARGIN_SECONDS = 24 * 3600
REFUND_ENVELOPE = "00" * 32  # a claim of 0 records names no receipt
NO_LOCK = "no escrow lock for this job"


class Settlement:
    """The edge's escrow in its job manager; None where settlement is off."""

    def __init__(self, escrow: Any, outbox: Any, datasets: Any, token_decimals: int) -> None:
        self.escrow, self.outbox, self.datasets, self.decimals = escrow, outbox, datasets, token_decimals

    def price_units(self, dataset: Dataset | None) -> int:
        if dataset is None:
            return 0
        return to_units(dataset.price_per_record, self.decimals, what=f"dataset {dataset.name}: price per record")

    def info(self) -> dict[str, Any]:
        """For GET /v1/edge: where a researcher locks, and in what units."""
        return {"method": "evm-escrow", "contract": self.escrow.address, "chain_id": int(self.escrow.chain.chain_id),
                "token_decimals": self.decimals, "expiry_margin_seconds": EXPIRY_MARGIN_SECONDS}

    # -- before the job runs ---------------------------------------------------------------

    def refusal(self, spec: JobSpec, researcher: Any, dataset: Dataset | None) -> str | None:
        """None when the job may run; else the reason it may not, beginning "no escrow lock
        for this job: ". Any fault reading the chain refuses too."""
        try:
            price = self.price_units(dataset)
            if price == 0:
                return None
            return self._lock_problem(spec, researcher, price)
        except RaphaError as exc:
            return f"{NO_LOCK}: {exc.diagnostics()}"
        except Exception:
            log.exception("job %s: the escrow lock could not be read", spec.job_id)
            return f"{NO_LOCK}: the edge could not read its escrow contract"

    def _lock_problem(self, spec: JobSpec, researcher: Any, price: int) -> str | None:
        address = getattr(researcher, "chain_address", "")
        if not address:
            return (f"{NO_LOCK}: no chain account is registered for you at this edge; ask the hospital to run "
                    "'rapha-edge researchers add ... --chain-address' with the address 'rapha keygen' printed")
        entry = self.escrow.lock_of(spec.job_id)
        budget = int(spec.budget.max_records)
        if entry["state"] != "locked":
            return (f"{NO_LOCK}: the escrow contract {self.escrow.address} holds none for job {spec.job_id}"
                    + ("" if entry["state"] == "free" else f" (its lock is {entry['state']})"))
        if entry["researcher"] != address:
            return f"{NO_LOCK}: the lock was made by {entry['researcher']}, not your registered account {address}"
        if int(entry["price"]) != price:
            return (f"{NO_LOCK}: the lock is at {from_units(entry['price'], self.decimals)} per record, the dataset's "
                    f"price is {from_units(price, self.decimals)}")
        if int(entry["max_records"]) < budget:
            return f"{NO_LOCK}: the lock covers {entry['max_records']} records, the job's budget is {budget}"
        needed = int(time.time()) + int(spec.budget.max_seconds) + EXPIRY_MARGIN_SECONDS
        if int(entry["expiry"]) < needed:
            return (f"{NO_LOCK}: the lock expires too soon (at {entry['expiry']}; it must last at least "
                    f"{EXPIRY_MARGIN_SECONDS // 3600} h past the job's {spec.budget.max_seconds} s)")
        return None

    # -- at the end --------------------------------------------------------------------------

    def claim(self, job_id: str, envelope_sha256: str, records: int, dataset: Dataset | None) -> bool:
        """Queue the claim of ``records`` for a released job (once: again is a no-op);
        False when the dataset is not priced (nothing to claim)."""
        price = self.price_units(dataset)
        if price == 0:
            return False
        self.outbox.enqueue_claim(job_id, envelope_sha256, int(records), price)
        return True

    def refund(self, job_id: str, dataset: Dataset | None) -> None:
        """A job that ended without release: claim 0 records when it has a lock, so the
        whole lock goes back to its researcher. Never raises: the lock stays cancellable
        by the researcher after its expiry whatever happens here."""
        try:
            price = self.price_units(dataset)
            if price == 0 or self.escrow.lock_of(job_id)["state"] != "locked":
                return
            self.outbox.enqueue_claim(job_id, REFUND_ENVELOPE, 0, price)
        except BadInput:
            return
        except Exception:
            log.exception("job %s: the refund of its escrow lock could not be queued", job_id)

    def wait_claimed(self, job_id: str, timeout: float) -> dict[str, Any] | None:
        """The receipt's ``settlement_claim`` block once the claim is mined, or None."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.outbox.claim_of(job_id)
            if state["state"] == "mined":
                return dict(state["claim"])
            if state["state"] in ("refused", "none") or time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
