"""Building the receipt predicate from what the edge observed, then signing it.

Every value here comes from the edge's own records (the broker's meter, the release
checks, the gate results), never from anything the job reported about itself.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from jupyter_rapha.protocol.devices import devices_section
from jupyter_rapha.protocol.jobspec import JobSpec
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.private import job_mode
from jupyter_rapha.protocol.receipt import PREDICATE_VERSION, metrics_digest, sha256_hex, sign_receipt

from ..gates.pipeline import GATE_ORDER, GateResult


def settlement(price_per_record: str, records_used: int, currency: str) -> dict[str, Any]:
    try:
        price = Decimal(price_per_record)
    except InvalidOperation:
        price = Decimal(0)
    return {"price_per_record": str(price), "currency": currency, "records": records_used,
            "amount": str(price * records_used)}


def gate_entries(results: list[GateResult]) -> list[dict[str, Any]]:
    """One entry per known gate, in order; a gate that did not run is 'absent'."""
    by_name = {r.name: r for r in results}
    entries = []
    for name in (*GATE_ORDER, "release"):
        result = by_name.get(name) or GateResult(name, "absent", {"reason": "did not run"})
        entries.append(result.receipt_entry())
    return entries


def gate_evidence(results: list[GateResult]) -> dict[str, Any]:
    """The facts a reviewer re-checks without asking the edge: the attestation quote and
    its binding, the policy bundle digest, the air-gap probe digest, the scan summary."""
    by_name = {r.name: r.evidence for r in results}
    attestation = by_name.get("attestation", {})
    policy = by_name.get("policy", {})
    airgap = by_name.get("airgap", {})
    scan = by_name.get("scan", {})
    return {
        "attestation": {key: attestation[key] for key in ("backend", "outcome", "quote_sha256", "quote",
                                                         "tcb_status", "debug", "commitment", "unsafe")
                        if key in attestation},
        "policy": {"bundle_sha256": policy.get("bundle_sha256"),
                   "obligations": (policy.get("decision") or {}).get("obligations", {})},
        "airgap": {**{key: airgap[key] for key in ("sealed", "binary_sha256", "probe_sha256", "unsafe", "socket_filter")
                      if key in airgap}, **_filter_digest(airgap)},
        "scan": {"scanner_version": scan.get("scanner_version"), "counts": scan.get("counts", {})},
    }


def _filter_digest(airgap: dict[str, Any]) -> dict[str, Any]:
    """The seccomp filter's digest as the probe measured it, under the job's own variant."""
    seccomp = (airgap.get("probe") or {}).get("seccomp") or {}
    digest = seccomp.get("filter_sha256") if isinstance(seccomp, dict) else None
    return {"filter_sha256": digest} if isinstance(digest, str) else {}


def dataset_entry(spec: JobSpec, dataset: Any, meter: Any) -> dict[str, Any]:
    """The data section; ``preprocessing`` only where the granted fields declared
    transforms: the steps the broker ran (from the meter, not today's registry) and
    their digest."""
    entry = {"id": dataset.name, "version": dataset.version, "fields": list(spec.fields),
             "records_used": meter.records_used, "records_root": meter.records_root_hex,
             "cohort_size": meter.cohort_size, "skipped": dict(meter.skipped)}
    preprocessing = getattr(meter, "preprocessing", None)
    if preprocessing:
        entry["preprocessing"] = preprocessing
    return entry


def job_entry(spec: JobSpec, request_sha256: str) -> dict[str, Any]:
    """The job section. With included files, ``code`` is the digest of the canonical
    listing of the cell and each file by path and sha256 (``code_sha256`` stays the
    cell's); with artifacts, ``artifacts`` names the weights that came in by name, sha256
    and size: the receipt binds code, data, policy, weights in and weights out."""
    entry: dict[str, Any] = {"id": spec.job_id, "researcher_key_id": spec.researcher_key_id,
                             "code_sha256": spec.code_sha256, "request_sha256": request_sha256,
                             "params": spec.params, "mode": job_mode(spec.code)}
    if spec.includes:
        entry["code"] = {"sha256": spec.code_listing_sha256, "files": spec.code_listing()}
    if spec.artifacts:
        entry["artifacts"] = [a.to_dict() for a in spec.artifacts]
    if spec.processes > 1:  # one process: left out, as every receipt before had it
        entry["processes"] = spec.processes
    return entry


def build_predicate(*, spec: JobSpec, request_sha256: str, edge: dict[str, Any], dataset: Any,
                    meter: Any, weights: bytes, weights_tensors: int, metrics: dict[str, Any],
                    gates: list[GateResult], unsafe: tuple[str, ...], times: dict[str, str],
                    currency: str, privacy: dict[str, Any] | None = None,
                    run_times: tuple[str, str] | None = None) -> dict[str, Any]:
    """``privacy``: a DP job's section, from the edge's trainer (checked as it was read);
    ``run_times``: when the job process started and ended, for its GPU-seconds."""
    predicate: dict[str, Any] = {
        "receipt_version": PREDICATE_VERSION,
        "job": job_entry(spec, request_sha256),
        "edge": edge,
        "dataset": dataset_entry(spec, dataset, meter),
        "budget": {"max_records": spec.budget.max_records, "max_seconds": spec.budget.max_seconds},
        "settlement": settlement(dataset.price_per_record, meter.records_used, currency),
        "outputs": {"weights": {"sha256": sha256_hex(weights), "bytes": len(weights), "tensors": weights_tensors},
                    "metrics": {"sha256": metrics_digest(metrics), "names": sorted(metrics)}},
        "metrics": metrics,
        "gates": gate_entries(gates),
        "evidence": gate_evidence(gates),
        "unsafe": sorted(unsafe),
        "times": times,
    }
    if privacy is not None:
        predicate["privacy"] = dict(privacy)
    airgap = next((r.evidence for r in gates if r.name == "airgap"), {})
    devices = devices_section(airgap.get("gpus") or {},
                              *(run_times or (times.get("started", ""), times.get("finished", ""))))
    if devices is not None:  # GPU-seconds: the budget's ceiling, and what the job used
        predicate["devices"] = devices
        predicate["budget"]["max_gpu_seconds"] = spec.budget.max_seconds * len(devices["gpus"])
    return predicate


def sign(predicate: dict[str, Any], weights: bytes, key: PrivateKey) -> dict[str, Any]:
    return sign_receipt(predicate, sha256_hex(weights), key)
