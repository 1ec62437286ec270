"""Collateral: what Intel publishes about platforms after they were made.

A quote can verify perfectly and still come from a platform whose TCB has known
vulnerabilities or whose PCK certificate was revoked. That is what collateral answers:
CRLs for the PCK CAs and the root, and the TCB Info for the platform's FMSPC, signed by
Intel's TCB Signing key under the same root. Providers are pluggable; this module holds
the interface and the default, an offline bundle the caller has already read::

    {"format": "rapha-dcap-collateral/v1",
     "crls": ["-----BEGIN X509 CRL-----..." or hex DER, ...],
     "tcb_info": [{"body": "<exact text of a PCS TCB Info response>",
                   "issuer_chain": "<PEM: TCB Signing cert, root>"}]}

Not evaluated here: QE Identity and TDX module identities.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import BadInput
from . import pck
from .quote import Quote, TdxReportBody
from .sgx_extensions import platform_of
from .signatures import ecdsa_verifies

BUNDLE_FORMAT = "rapha-dcap-collateral/v1"
NO_COLLATERAL = "unknown (no collateral)"


@dataclass(frozen=True)
class CollateralResult:
    tcb_status: str
    checks: tuple[tuple[str, bool, str], ...] = ()


class CollateralProvider(Protocol):
    def evaluate(self, quote: Quote, chain: pck.PckChain, now: datetime) -> CollateralResult: ...


@dataclass(frozen=True)
class OfflineCollateral:
    crls: tuple[x509.CertificateRevocationList, ...]
    tcb_infos: tuple[tuple[str, bytes], ...] = field(default=())  # (response text, issuer chain PEM)

    @classmethod
    def from_json(cls, data: bytes | str | dict[str, Any]) -> OfflineCollateral:
        document = json.loads(data) if isinstance(data, (bytes, str)) else data
        if not isinstance(document, dict) or document.get("format") != BUNDLE_FORMAT:
            raise BadInput(f"collateral bundle is not {BUNDLE_FORMAT}")
        crls = tuple(_load_crl(item) for item in document.get("crls", []))
        infos = tuple((str(item["body"]), str(item["issuer_chain"]).encode("ascii"))
                      for item in document.get("tcb_info", []) if isinstance(item, dict))
        return cls(crls, infos)

    def evaluate(self, quote: Quote, chain: pck.PckChain, now: datetime) -> CollateralResult:
        checks = [_check_revocation(chain, self.crls, now)]
        status, detail, ok = _tcb_status(quote, chain, self.tcb_infos, now)
        checks.append(("tcb_info", ok, detail))
        return CollateralResult(status if ok else f"unknown ({detail})", tuple(checks))


def _load_crl(item: Any) -> x509.CertificateRevocationList:
    try:
        if isinstance(item, str) and item.lstrip().startswith("-----BEGIN"):
            return x509.load_pem_x509_crl(item.encode("ascii"))
        return x509.load_der_x509_crl(bytes.fromhex(str(item)))
    except ValueError as exc:
        raise BadInput("a CRL in the collateral bundle does not parse") from exc


def _check_revocation(chain: pck.PckChain, crls: tuple[x509.CertificateRevocationList, ...],
                      now: datetime) -> tuple[str, bool, str]:
    """Every certificate below the root needs a current CRL signed by its issuer."""
    for cert, issuer in pairwise(chain.certs):
        crl = next((c for c in crls if _signed_by(c, issuer)), None)
        if crl is None:
            return "crl", False, f"no CRL signed by {issuer.subject.rfc4514_string()}"
        if crl.next_update_utc is None or not crl.last_update_utc <= now <= crl.next_update_utc:
            return "crl", False, f"the CRL of {issuer.subject.rfc4514_string()} is not current at {now:%Y-%m-%d}"
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            return "crl", False, f"{cert.subject.rfc4514_string()} is revoked"
    return "crl", True, "no certificate in the chain is revoked"


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    return (crl.issuer == issuer.subject and isinstance(key, ec.EllipticCurvePublicKey)
            and crl.is_signature_valid(key))


def _tcb_status(quote: Quote, chain: pck.PckChain, infos: tuple[tuple[str, bytes], ...],
                now: datetime) -> tuple[str, str, bool]:
    platform = platform_of(chain.leaf)
    for body, issuer_chain in infos:
        info, signed = _signed_tcb_info(body, issuer_chain, now)
        if info.get("fmspc", "").lower() != platform.fmspc or info.get("id", "SGX") != quote.tee.upper():
            continue
        if not _time(info.get("issueDate")) <= now <= _time(info.get("nextUpdate")):
            return "", f"TCB Info for FMSPC {platform.fmspc} is not current", False
        level = _matching_level(quote, platform, info.get("tcbLevels", []))
        if level is None:
            return "", f"no TCB level matches FMSPC {platform.fmspc}", False
        status = str(level.get("tcbStatus"))
        return status, f"TCB level {level.get('tcbDate')} for FMSPC {platform.fmspc}: {status} ({signed})", True
    return "", f"no TCB Info for FMSPC {platform.fmspc}", False


def _signed_tcb_info(body: str, issuer_chain: bytes, now: datetime) -> tuple[dict[str, Any], str]:
    """Return the tcbInfo object after checking Intel's signature over its exact bytes."""
    start = body.find('"tcbInfo"')
    colon = body.find(":", start)
    if start < 0 or colon < 0:
        raise BadInput("TCB Info response has no tcbInfo")
    offset = colon + 1 + (len(body[colon + 1:]) - len(body[colon + 1:].lstrip()))
    info, end = json.JSONDecoder().raw_decode(body, offset)
    signature = bytes.fromhex(json.loads(body)["signature"])
    signing = pck.parse_pck_chain(issuer_chain)
    for ok, detail in (pck.check_root(signing), pck.check_links(signing), pck.check_validity(signing, now)):
        if not ok:
            raise BadInput(f"TCB Info signing chain: {detail}")
    key = signing.leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not ecdsa_verifies(
            key, signature, body[offset:end].encode("utf-8")):
        raise BadInput("TCB Info signature does not verify with the TCB Signing key")
    return info, "signed by Intel TCB Signing"


def _matching_level(quote: Quote, platform: Any, levels: list[dict[str, Any]]) -> dict[str, Any] | None:
    for level in levels:  # ordered newest first: the first level the platform reaches wins
        tcb = level.get("tcb", {})
        sgx = [c.get("svn", 0) for c in tcb.get("sgxtcbcomponents", [])]
        if len(sgx) != 16 or any(have < need for have, need in zip(platform.sgx_tcb_components, sgx, strict=True)):
            continue
        if platform.pce_svn < tcb.get("pcesvn", 0):
            continue
        if isinstance(quote.body, TdxReportBody) and not _tdx_reaches(quote.body, tcb):
            continue
        return level
    return None


def _tdx_reaches(body: TdxReportBody, tcb: dict[str, Any]) -> bool:
    svn = body.field("tee_tcb_svn")
    need = [c.get("svn", 0) for c in tcb.get("tdxtcbcomponents", [])]
    # With a TDX module major version above 0, bytes 0-1 are judged by the TDX module
    # identity (not evaluated here), so only bytes 2-15 are compared.
    first = 2 if svn[1] > 0 else 0
    return len(need) == 16 and all(svn[i] >= need[i] for i in range(first, 16))


def _time(value: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadInput("TCB Info has an unreadable date") from exc
