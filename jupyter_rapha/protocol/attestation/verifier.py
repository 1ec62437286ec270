"""Verify a quote: one named check per fact, so a CLI can print a line for each.

Pure: bytes, a time and data in; a ``QuoteVerification`` out. Nothing here reads a
clock, a file or the network; collateral arrives through a provider the caller built.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import RaphaError
from ..keys import PublicKey
from ..checks import Check
from . import allowlist as policy_data
from . import pck, signatures, software
from .collateral import NO_COLLATERAL, CollateralProvider
from .quote import INTEL_QE_VENDOR_ID, Quote, parse_quote

SOFTWARE_TCB = "none (unsafe software backend)"


@dataclass
class QuoteVerification:
    checks: list[Check] = field(default_factory=list)
    kind: str = ""  # "tdx", "sgx" or "unsafe_software"; "" when the bytes did not parse
    version: int | None = None
    quote_sha256: str = ""  # over the logical quote, without buffer padding
    logical_quote: bytes = b""
    report_data: bytes | None = None
    measurements: dict[str, str] = field(default_factory=dict)
    debug: bool | None = None
    tcb_status: str = NO_COLLATERAL

    @property
    def unsafe(self) -> bool:
        return self.kind == "unsafe_software"

    def ok(self, allow_skipped: bool = False) -> bool:
        bad = {"fail"} if allow_skipped else {"fail", "skipped"}
        return bool(self.checks) and not any(c.status in bad for c in self.checks)

    def failures(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if c.status == "fail"]

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def add(self, name: str, passed: bool, detail: str) -> bool:
        self.checks.append(Check(name, "pass" if passed else "fail", detail))
        return passed

    def skip(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, "skipped", detail))


def verify_quote(quote: bytes, *, expected_report_data: bytes | None, now: datetime,
                 allowlist: dict[str, Any] | None, collateral: CollateralProvider | None = None,
                 software_key: PublicKey | None = None) -> QuoteVerification:
    """Check a TDX v4 / SGX v3 quote, or the unsafe software stand-in (needs ``software_key``).

    ``expected_report_data`` None skips the binding check, ``allowlist`` None skips the
    measurement check (both recorded as "skipped", so ``ok()`` stays false); the debug
    check always runs, with ``allow_debug`` from the allowlist or the default (refuse).
    """
    result = QuoteVerification()
    if now.tzinfo is None:
        result.add("time", False, "the verification time must be timezone-aware (UTC)")
        return result
    if software.is_software_quote(quote):
        _verify_software(quote, software_key, result)
    elif _verify_hardware(quote, now, collateral, allowlist, result) is None:
        return result
    _check_policy(expected_report_data, allowlist, result)
    return result


def _verify_hardware(data: bytes, now: datetime, collateral: CollateralProvider | None,
                     allowlist: dict[str, Any] | None, result: QuoteVerification) -> Quote | None:
    try:
        quote = parse_quote(data)
    except RaphaError as exc:
        result.add("format", False, exc.diagnostics())
        return None
    _describe(quote, data, result)
    result.add("qe_vendor", quote.qe_vendor_id == INTEL_QE_VENDOR_ID, f"QE vendor {quote.qe_vendor_id.hex()}")
    result.add("quote_signature", *signatures.check_quote_signature(quote))
    result.add("qe_binding", *signatures.check_qe_binding(quote))
    try:
        chain = pck.parse_pck_chain(quote.pck_chain_pem)
        pck_key = chain.leaf_key()
    except RaphaError as exc:
        result.add("pck_chain", False, exc.diagnostics())
        return quote
    result.add("pck_root", *pck.check_root(chain))
    result.add("pck_chain", *pck.check_links(chain))
    result.add("pck_validity", *pck.check_validity(chain, now))
    result.add("qe_report_signature", *signatures.check_qe_report_signature(quote, pck_key))
    _check_collateral(quote, chain, now, collateral, allowlist, result)
    return quote


def _describe(quote: Quote, data: bytes, result: QuoteVerification) -> None:
    result.kind, result.version = quote.tee, quote.version
    result.logical_quote = data[:quote.length]
    result.quote_sha256 = hashlib.sha256(result.logical_quote).hexdigest()
    result.report_data, result.debug = quote.report_data, quote.debug
    result.measurements = quote.body.measurements()
    ignored = len(data) - quote.length
    padding = f"; {ignored} bytes after the logical end ignored" if ignored else ""
    result.add("format", True, f"{quote.tee.upper()} quote v{quote.version}, {quote.length} bytes{padding}")


def _check_collateral(quote: Quote, chain: pck.PckChain, now: datetime, collateral: CollateralProvider | None,
                      allowlist: dict[str, Any] | None, result: QuoteVerification) -> None:
    if collateral is None:
        result.tcb_status = NO_COLLATERAL
        result.skip("tcb", "no collateral given: TCB status and revocation not checked")
        return
    try:
        outcome = collateral.evaluate(quote, chain, now)
    except RaphaError as exc:
        result.tcb_status = "unknown (collateral failed)"
        result.add("tcb", False, exc.diagnostics())
        return
    for name, passed, detail in outcome.checks:
        result.add(name, passed, detail)
    result.tcb_status = outcome.tcb_status
    accepted = policy_data.accepted_tcb_status(allowlist)
    result.add("tcb", outcome.tcb_status in accepted,
               f"TCB status {outcome.tcb_status}; accepted: {', '.join(accepted) or 'none'}")


def _verify_software(data: bytes, key: PublicKey | None, result: QuoteVerification) -> None:
    result.kind, result.tcb_status = "unsafe_software", SOFTWARE_TCB
    result.logical_quote, result.quote_sha256 = data, hashlib.sha256(data).hexdigest()
    try:
        parsed = software.parse_software_quote(data)
    except RaphaError as exc:
        result.add("format", False, exc.diagnostics())
        return
    result.report_data, result.measurements, result.debug = parsed.report_data, parsed.measurements, False
    result.add("format", True, f"{software.SOFTWARE_QUOTE_FORMAT} ({software.UNSAFE_LABEL})")
    if key is None:
        result.add("software_signature", False, "a software quote needs the edge's public key to verify")
        return
    result.add("software_signature", *software.check_software_signature(parsed, key))


def _check_policy(expected: bytes | None, allowlist: dict[str, Any] | None, result: QuoteVerification) -> None:
    if result.report_data is None:
        return  # nothing parsed; the format failure already says why
    try:
        allowed = policy_data.allow_debug(allowlist)
    except RaphaError as exc:
        result.add("debug", False, exc.diagnostics())
        allowed = False
    else:
        result.add("debug", not result.debug or allowed, _debug_detail(result, allowed))
    if expected is None:
        result.skip("report_data", "no expected report data given: the quote is not bound to a job")
    else:
        bound = len(expected) == 64 and expected == result.report_data
        result.add("report_data", bound, "report data binds this job" if bound else
                   "report data does not match this job's binding: the quote was made for something else")
    if allowlist is None:
        result.skip("allowlist", "no allowlist given: measurements not compared")
        return
    try:
        result.add("allowlist", *policy_data.check_allowlist(allowlist, result.kind, result.measurements))
    except RaphaError as exc:
        result.add("allowlist", False, exc.diagnostics())


def _debug_detail(result: QuoteVerification, allowed: bool) -> str:
    if not result.debug:
        return "not a debug TD or enclave"
    what = "debug TD (TD_ATTRIBUTES bit 0)" if result.kind == "tdx" else "debug enclave (ATTRIBUTES.DEBUG)"
    return f"{what}: the host can read its memory; " + ("allowed by policy data" if allowed else "refused")
