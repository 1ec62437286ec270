"""The attestation gate: a quote bound to this job, verified before any code runs.

The gate asks the configured backend for a quote whose report data commits to this job
(nonce, request digest, edge key, runtime measurement), then verifies it with the same
pure verifier a researcher runs. The edge does not trust its own backend: a replayed or
foreign quote fails the binding check here exactly as it would at the researcher's.

Outcomes: "pass" (a verified TEE quote), "unsafe" (the software stand-in in demo mode,
passed but labelled), "deny" (no TEE outside demo mode, or any failed check).
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from collections.abc import Callable

from jupyter_rapha.protocol.attestation import (
    DEFAULT_POLICY, UNSAFE_LABEL, CollateralProvider, QuoteVerification, binding_commitment, report_data_for,
    verify_quote,
)
from jupyter_rapha.protocol.errors import AttestationDenied, RaphaError
from jupyter_rapha.protocol.keys import PrivateKey

from ..attestation.backends import GRAMINE_ATTESTATION_ROOT, TSM_REPORT_ROOT, AttestationBackend, select_backend
from ..attestation.measurement import runtime_measurement
from .pipeline import GateContext, GateResult

log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AttestationGate:
    name = "attestation"

    def __init__(self, *, backend: str | AttestationBackend = "auto", edge_key: PrivateKey | None = None,
                 policy_data: dict[str, Any] | None = None, collateral: CollateralProvider | None = None,
                 policy_dir: Path | None = None, airgap_binary: Path | None = None,
                 tsm_root: Path = TSM_REPORT_ROOT, gramine_root: Path = GRAMINE_ATTESTATION_ROOT,
                 clock: Callable[[], datetime] = _utc_now) -> None:
        self.backend_choice, self.edge_key = backend, edge_key
        self.policy_data = policy_data if policy_data is not None else DEFAULT_POLICY
        self.collateral, self.clock = collateral, clock
        self.policy_dir, self.airgap_binary = policy_dir, airgap_binary
        self.tsm_root, self.gramine_root = Path(tsm_root), Path(gramine_root)

    def check(self, ctx: GateContext) -> GateResult:
        try:
            backend = self._backend(bool(getattr(ctx.settings, "demo", False)))
            commitment = self._commitment(ctx)
        except AttestationDenied as exc:
            return self._deny("none", exc.reasons)
        except RaphaError as exc:  # e.g. a job without a nonce: nothing to bind, so deny
            return self._deny("none", [exc.diagnostics()])
        report_data = report_data_for(commitment)
        try:
            quote = backend.quote(report_data, commitment["runtime"])
        except RaphaError as exc:  # a TEE that fails to quote denies (S4)
            return self._deny(backend.name, [exc.diagnostics()])
        verification = self._verify(backend, quote, report_data)
        return self._result(backend, verification, commitment)

    def _backend(self, demo: bool) -> AttestationBackend:
        choice = self.backend_choice
        if isinstance(choice, str):
            return select_backend(choice, demo=demo, edge_key=self.edge_key,
                                  tsm_root=self.tsm_root, gramine_root=self.gramine_root)
        if choice.name == "unsafe_software" and not demo:
            raise AttestationDenied("the software attestation backend is allowed only in demo mode")
        return choice

    def _edge_key_id(self, ctx: GateContext) -> str:
        from_ctx = str(ctx.extra.get("edge_key_id") or "")
        own = self.edge_key.key_id if self.edge_key is not None else ""
        if from_ctx and own and from_ctx != own:
            raise AttestationDenied("the edge key id of this job differs from the attestation gate's edge key")
        if not (from_ctx or own):
            raise AttestationDenied("no edge key id to bind the quote to")
        return from_ctx or own

    def _commitment(self, ctx: GateContext) -> dict[str, Any]:
        settings = ctx.settings
        policy_dir = self.policy_dir or getattr(settings, "policies_dir", None)
        airgap = self.airgap_binary or _configured_airgap(settings)
        runtime = runtime_measurement(policy_dir, airgap)
        return binding_commitment(ctx.spec.nonce, ctx.request_sha256, self._edge_key_id(ctx), runtime)

    def _verify(self, backend: AttestationBackend, quote: bytes, report_data: bytes) -> QuoteVerification:
        software = backend.name == "unsafe_software"
        allowlist: dict[str, Any] | None = self.policy_data
        if software and not self.policy_data.get("measurements", {}).get("unsafe_software"):
            allowlist = None  # the stand-in measures itself; an allowlist of it proves nothing
        return verify_quote(quote, expected_report_data=report_data, now=self.clock(), allowlist=allowlist,
                            collateral=self.collateral,
                            software_key=self.edge_key.public if software and self.edge_key else None)

    def _result(self, backend: AttestationBackend, verification: QuoteVerification,
                commitment: dict[str, Any]) -> GateResult:
        failures = verification.failures()
        skipped = [c.name for c in verification.checks if c.status == "skipped"]
        tolerated = {"tcb", "allowlist"} if verification.unsafe else {"tcb"}
        failures += [f"{name}: check was not made" for name in skipped if name not in tolerated]
        outcome = "deny" if failures or not verification.checks else ("unsafe" if verification.unsafe else "pass")
        binding = verification.check("report_data")
        evidence = {
            "backend": backend.name, "outcome": outcome, "quote_sha256": verification.quote_sha256,
            "quote": base64.b64encode(verification.logical_quote).decode("ascii"),
            "tcb_status": verification.tcb_status, "measurements": verification.measurements,
            "debug": verification.debug,
            "report_data_binding": "ok" if binding is not None and binding.status == "pass" else "mismatch",
            "commitment": commitment,
            "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in verification.checks],
        }
        if verification.unsafe:
            evidence["unsafe"] = UNSAFE_LABEL
            log.warning("job attested by the unsafe software backend: %s", UNSAFE_LABEL)
        return GateResult(self.name, outcome, evidence, tuple(failures))

    def _deny(self, backend: str, reasons: list[str]) -> GateResult:
        evidence = {"backend": backend, "outcome": "deny", "reasons": list(reasons)}
        return GateResult(self.name, "deny", evidence, tuple(reasons))


def _configured_airgap(settings: Any) -> Path | None:
    configured = getattr(getattr(settings, "sandbox", None), "airgap_binary", "")
    return Path(configured) if configured else None
