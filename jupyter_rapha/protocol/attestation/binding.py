"""What a quote's 64 bytes of report data commit to.

A quote proves which code runs on which hardware, but says nothing about *which job* it
was made for unless its report data commits to the job. Without this binding an edge
could replay a quote taken once on good hardware for every later job, or for a job
on another machine. The commitment is canonical JSON (RFC 8785) of::

    {"purpose": "rapha-attestation/v1", "job_nonce", "request_sha256", "edge_key_id",
     "runtime": {"edge_code_sha256", "policy_bundle_sha256", "airgap_binary_sha256"}}

and the report data is SHA-512 of those bytes (64 bytes, the whole field). Anyone holding
the commitment (it travels in the gate evidence) recomputes the report data and compares.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Any

from ..canonical import canonical_json
from ..errors import BadInput

BINDING_PURPOSE = "rapha-attestation/v1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class RuntimeMeasurement:
    """Digests of what the edge runs for this job besides the TEE's own measurements."""

    edge_code_sha256: str  # the installed edge_kernel and jupyter_rapha/protocol sources
    policy_bundle_sha256: str  # the Rego policies and their data
    airgap_binary_sha256: str  # rapha-airgap, or the digest of b"" when it is absent

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, str) or not _HEX64.match(value):
                raise BadInput(f"runtime measurement {name} must be 64 lowercase hex digits")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def binding_commitment(job_nonce: str, request_sha256: str, edge_key_id: str,
                       runtime: RuntimeMeasurement) -> dict[str, Any]:
    if not job_nonce or not request_sha256 or not edge_key_id:
        # An empty field would let one quote bind many jobs.
        raise BadInput("the attestation binding needs a job nonce, a request digest and an edge key id")
    return {"purpose": BINDING_PURPOSE, "job_nonce": job_nonce, "request_sha256": request_sha256,
            "edge_key_id": edge_key_id, "runtime": runtime.to_dict()}


def report_data_for(commitment: dict[str, Any]) -> bytes:
    """The 64 report-data bytes a quote for this commitment must carry."""
    if commitment.get("purpose") != BINDING_PURPOSE:
        raise BadInput(f"attestation commitment purpose must be {BINDING_PURPOSE}")
    return hashlib.sha512(canonical_json(commitment)).digest()
