"""The three ECDSA facts that make a DCAP quote trustworthy.

1. The quoting enclave (QE) signed header + report body with its attestation key.
2. The platform's PCK key signed the QE's own report, so the QE ran on genuine hardware.
3. That QE report commits to the attestation key: its report_data[0:32] is
   SHA-256(attestation key || QE auth data). Without (3) anyone holding some genuine QE
   report could pair it with a key of their own and sign arbitrary quotes.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .quote import Quote


def attestation_public_key(raw: bytes) -> ec.EllipticCurvePublicKey:
    """The 64-byte x || y point as a P-256 key; ValueError if it is not on the curve."""
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)


def ecdsa_verifies(key: ec.EllipticCurvePublicKey, raw_signature: bytes, message: bytes) -> bool:
    if len(raw_signature) != 64:
        return False
    r, s = int.from_bytes(raw_signature[:32], "big"), int.from_bytes(raw_signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def check_quote_signature(quote: Quote) -> tuple[bool, str]:
    try:
        key = attestation_public_key(quote.attestation_key)
    except ValueError:
        return False, "the attestation key is not a P-256 point"
    if not ecdsa_verifies(key, quote.signature, quote.signed_bytes):
        return False, "the quote signature over header and report body does not verify with the attestation key"
    return True, "ECDSA P-256 signature over header and report body verifies with the attestation key"


def check_qe_report_signature(quote: Quote, pck_key: ec.EllipticCurvePublicKey) -> tuple[bool, str]:
    if not ecdsa_verifies(pck_key, quote.qe_report_signature, quote.qe_report.raw):
        return False, "the QE report signature does not verify with the PCK leaf key"
    return True, "QE report signed by the PCK leaf key"


def check_qe_binding(quote: Quote) -> tuple[bool, str]:
    expected = hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest()
    report_data = quote.qe_report.report_data
    if report_data[:32] != expected or any(report_data[32:]):
        return False, "QE report data is not SHA-256(attestation key || QE auth data)"
    return True, "QE report data commits to the attestation key and QE auth data"
