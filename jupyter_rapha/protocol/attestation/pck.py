"""The PCK certificate chain inside a quote: parse it strictly, walk it to Intel's root.

The chain (leaf, PCK Platform or Processor CA, root) is what ties the quoting enclave's
signature to a genuine Intel platform. The root must be byte-identical to the embedded
Intel SGX Root CA; every link signature is checked; every certificate must be valid at
the time the caller passes in (this module never reads a clock).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .intel_root import INTEL_SGX_ROOT_CA_PEM
from .quote import QuoteFormatError

INTEL_ROOT = x509.load_pem_x509_certificate(INTEL_SGX_ROOT_CA_PEM)
SGX_EXTENSIONS_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")


@dataclass(frozen=True)
class PckChain:
    certs: tuple[x509.Certificate, ...]  # leaf first, root last

    @property
    def leaf(self) -> x509.Certificate:
        return self.certs[0]

    @property
    def root(self) -> x509.Certificate:
        return self.certs[-1]

    def leaf_key(self) -> ec.EllipticCurvePublicKey:
        key = self.leaf.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise QuoteFormatError("the PCK leaf key is not an ECDSA P-256 key")
        return key

    def subjects(self) -> list[str]:
        return [cert.subject.rfc4514_string() for cert in self.certs]


def parse_pck_chain(pem: bytes) -> PckChain:
    """Parse the PEM chain and insist that it is exactly the canonical PEM of the
    certificates it holds (optionally followed by one NUL, as some quoting libraries
    write). Without this, bytes between or after the certificates could be changed
    without any signature noticing."""
    try:
        certs = tuple(x509.load_pem_x509_certificates(pem))
    except ValueError as exc:
        raise QuoteFormatError("the PCK certificate chain does not parse as PEM") from exc
    canonical = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)
    if pem not in (canonical, canonical + b"\0"):
        raise QuoteFormatError("the PCK certificate chain holds bytes outside its certificates")
    if not 2 <= len(certs) <= 4:
        raise QuoteFormatError(f"the PCK certificate chain has {len(certs)} certificates, expected 3")
    for cert in certs:
        _parse_fully(cert)
    return PckChain(certs)


def _parse_fully(cert: x509.Certificate) -> None:
    """The library decodes fields lazily; decode every field used later here, so that a
    malformed certificate is a format error and never an exception halfway through."""
    try:
        cert.subject.rfc4514_string()
        cert.issuer.rfc4514_string()
        list(cert.extensions)
        cert.public_key()
        _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.serial_number)
    except Exception as exc:  # the library raises several types for bad DER; all mean "refuse"
        raise QuoteFormatError("a certificate in the PCK chain is malformed") from exc


def check_root(chain: PckChain) -> tuple[bool, str]:
    same = chain.root.public_bytes(serialization.Encoding.DER) == INTEL_ROOT.public_bytes(serialization.Encoding.DER)
    if not same:
        return False, f"chain root {chain.root.subject.rfc4514_string()} is not the embedded Intel SGX Root CA"
    return True, "chain ends in the embedded Intel SGX Root CA (byte-identical)"


def check_links(chain: PckChain) -> tuple[bool, str]:
    """Each certificate is signed by the next; the root by itself; issuers are CAs."""
    for cert, issuer in zip(chain.certs, chain.certs[1:] + (chain.root,), strict=True):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return False, f"{cert.subject.rfc4514_string()} is not signed by {issuer.subject.rfc4514_string()}"
        if not _is_ca(issuer):
            return False, f"{issuer.subject.rfc4514_string()} is not a CA certificate"
    return True, " <- ".join(_common_name(cert) for cert in chain.certs)


def check_validity(chain: PckChain, now: datetime) -> tuple[bool, str]:
    for cert in chain.certs:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return False, (f"{_common_name(cert)} is valid from {cert.not_valid_before_utc:%Y-%m-%d} to "
                           f"{cert.not_valid_after_utc:%Y-%m-%d}, not at {now:%Y-%m-%dT%H:%M:%SZ}")
    first_expiry = min(cert.not_valid_after_utc for cert in chain.certs)
    return True, f"all certificates valid at {now:%Y-%m-%dT%H:%M:%SZ} (first expiry {first_expiry:%Y-%m-%d})"


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()
