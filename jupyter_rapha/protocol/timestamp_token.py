"""An RFC 3161 TimeStampToken, checked without I/O.

The token is CMS SignedData (RFC 5652) whose encapsulated content is a TSTInfo. A token
is accepted only when every link holds:

- the TSTInfo's messageImprint is SHA-256 over nothing but the expected 32 bytes;
- the signed attributes name the TSTInfo content type and carry its digest, and the
  signature over their DER (as a SET) verifies with the signer certificate's key;
- an ESSCertID or ESSCertIDv2 signing-certificate attribute names that very certificate,
  so a token cannot be re-pointed at another certificate of the same key (RFC 5816);
- the certificate carries the extended key usage id-kp-timeStamping, alone and critical
  (RFC 3161 2.3): a certificate of the same CA issued for anything else must not be
  able to vouch for time;
- the certificate chains, signature by signature, to a trust anchor the caller passes
  in, and genTime lies within every certificate's validity.

This module never reads a clock: the only time is the token's own genTime.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asn1crypto import cms, tsp  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from .errors import VerificationError

MAX_TOKEN_BYTES = 64 * 1024  # a token with a short chain is a few KiB; refuse before parsing more
MAX_CHAIN = 6
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha384": hashes.SHA384,
                                                  "sha512": hashes.SHA512}


@dataclass(frozen=True)
class TimestampInfo:
    """What a checked token says."""

    gen_time: datetime
    hashed_message: bytes
    nonce: int | None
    serial_number: int
    tsa_subject: str
    chain: tuple[str, ...]  # subjects, signer first, trust anchor last


def check_token(token_der: bytes, expected: bytes, trust_anchors_pem: bytes) -> TimestampInfo:
    """Every check above, or VerificationError naming the first that failed."""
    anchors = _trust_anchors(trust_anchors_pem)
    if not isinstance(token_der, bytes) or not 0 < len(token_der) <= MAX_TOKEN_BYTES:
        raise VerificationError("timestamp token is empty or too large")
    try:
        return _check(token_der, expected, anchors)
    except VerificationError:
        raise
    except Exception as exc:  # asn1crypto decodes lazily and raises many types on bad DER: all refuse
        raise VerificationError("timestamp token is malformed") from exc


def _check(token_der: bytes, expected: bytes, anchors: list[x509.Certificate]) -> TimestampInfo:
    info = cms.ContentInfo.load(token_der, strict=True)
    if info["content_type"].native != "signed_data":
        raise VerificationError("timestamp token is not CMS SignedData")
    signed = info["content"]
    encap = signed["encap_content_info"]
    if encap["content_type"].native != "tst_info":
        raise VerificationError("timestamp token does not hold a TSTInfo")
    tst_der = encap["content"].contents
    tst = tsp.TSTInfo.load(tst_der, strict=True)
    signers = signed["signer_infos"]
    if len(signers) != 1:
        raise VerificationError("timestamp token must have exactly one signer")
    signer = signers[0]
    _check_unsigned_fields(signed, signer)
    certs = _embedded_certs(signed)
    cert = _signer_cert(signer["sid"], certs + anchors)
    _check_signed_attributes(signer, tst_der, cert)
    _check_signature(signer, cert)
    _check_imprint(tst, expected)
    gen_time = tst["gen_time"].native
    _check_eku(cert)
    chain = _chain(cert, certs, anchors)
    _check_validity(chain, gen_time)
    return TimestampInfo(gen_time=gen_time, hashed_message=bytes(tst["message_imprint"]["hashed_message"].native),
                         nonce=tst["nonce"].native, serial_number=int(tst["serial_number"].native),
                         tsa_subject=cert.subject.rfc4514_string(),
                         chain=tuple(c.subject.rfc4514_string() for c in chain))


def _check_unsigned_fields(signed: Any, signer: Any) -> None:
    """Fields outside the signature, pinned to their only consistent values so that no
    byte of a token can change without it being refused (the library parses lazily, so
    a field never read would otherwise never be checked at all)."""
    digest = signer["digest_algorithm"]["algorithm"].native
    if signed["version"].native != "v3" or digest not in [a["algorithm"].native for a in signed["digest_algorithms"]]:
        raise VerificationError("timestamp token's SignedData version or digest algorithms are inconsistent")
    expected_version = "v1" if signer["sid"].name == "issuer_and_serial_number" else "v3"
    if signer["version"].native != expected_version:
        raise VerificationError("timestamp token's SignerInfo version does not match its signer identifier")
    algorithm = signer["signature_algorithm"]
    if algorithm["algorithm"].native not in ("rsa", "rsassa_pkcs1v15") and algorithm.hash_algo != digest:
        raise VerificationError("timestamp token's signature algorithm names another hash than its digest algorithm")
    if signer["unsigned_attrs"]:
        raise VerificationError("timestamp token carries unsigned attributes")
    identifiers = [*signed["digest_algorithms"], signer["digest_algorithm"], algorithm]
    if any(a["parameters"].dump() not in (b"", b"\x05\x00") for a in identifiers):
        raise VerificationError("timestamp token's algorithm parameters are not absent or NULL")


def _trust_anchors(pem: bytes) -> list[x509.Certificate]:
    try:
        anchors = x509.load_pem_x509_certificates(pem) if pem else []
    except (ValueError, TypeError) as exc:
        raise VerificationError("TSA trust anchors are not PEM certificates") from exc
    if not anchors:
        raise VerificationError("no TSA trust anchor given")
    return anchors


def _embedded_certs(signed: Any) -> list[x509.Certificate]:
    found = []
    for choice in signed["certificates"] or []:
        if choice.name == "certificate":
            found.append(x509.load_der_x509_certificate(choice.chosen.dump()))
    return found


def _signer_cert(sid: Any, candidates: list[x509.Certificate]) -> x509.Certificate:
    for cert in candidates:
        if sid.name == "issuer_and_serial_number":
            wanted = sid.chosen
            if (cert.serial_number == wanted["serial_number"].native
                    and cert.issuer.public_bytes() == wanted["issuer"].dump()):
                return cert
        elif sid.name == "subject_key_identifier" and _ski(cert) == sid.chosen.native:
            return cert
    raise VerificationError("timestamp token's signer certificate is neither in the token nor among the trust anchors")


def _ski(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def _attributes(signer: Any) -> dict[str, Any]:
    attrs = signer["signed_attrs"]
    if not attrs:
        raise VerificationError("timestamp token has no signed attributes")
    found: dict[str, Any] = {}
    for attr in attrs:
        name = attr["type"].native
        if name in found or len(attr["values"]) != 1:
            raise VerificationError(f"signed attribute {name} is repeated or multi-valued")
        found[name] = attr["values"][0]
    return found


def _check_signed_attributes(signer: Any, tst_der: bytes, cert: x509.Certificate) -> None:
    attrs = _attributes(signer)
    if "content_type" not in attrs or attrs["content_type"].native != "tst_info":
        raise VerificationError("signed content-type attribute is not TSTInfo")
    algorithm = _hash_name(signer["digest_algorithm"]["algorithm"].native)
    if "message_digest" not in attrs or attrs["message_digest"].native != hashlib.new(algorithm, tst_der).digest():
        raise VerificationError("signed message-digest does not match the TSTInfo (token altered)")
    _check_signing_certificate(attrs, cert)


def _check_signing_certificate(attrs: dict[str, Any], cert: x509.Certificate) -> None:
    der = cert.public_bytes(serialization.Encoding.DER)
    if "signing_certificate_v2" in attrs:
        ids = attrs["signing_certificate_v2"]["certs"]
        first = ids[0] if len(ids) else None
        algorithm = _hash_name(first["hash_algorithm"]["algorithm"].native) if first is not None else "sha256"
        claimed = first["cert_hash"].native if first is not None else None
    elif "signing_certificate" in attrs:
        ids = attrs["signing_certificate"]["certs"]
        first = ids[0] if len(ids) else None
        algorithm, claimed = "sha1", first["cert_hash"].native if first is not None else None
    else:
        raise VerificationError("timestamp token has no signing-certificate attribute (ESSCertID)")
    # SHA-1 in ESSCertID only names a certificate already chosen by the signature; the
    # signature itself is never accepted over SHA-1.
    if claimed != hashlib.new(algorithm, der).digest():
        raise VerificationError("signing-certificate attribute names a different certificate than the signer's")


def _hash_name(name: str) -> str:
    if name not in _HASHES:
        raise VerificationError(f"hash algorithm {str(name)[:16]} is not accepted")
    return name


def _check_signature(signer: Any, cert: x509.Certificate) -> None:
    # The signature covers the DER of the attributes as a SET OF (tag 0x31), not the
    # [0] IMPLICIT form they are carried in (RFC 5652 5.4).
    data = b"\x31" + signer["signed_attrs"].dump()[1:]
    digest = _HASHES[_hash_name(signer["digest_algorithm"]["algorithm"].native)]()
    key, signature = cert.public_key(), signer["signature"].native
    scheme = signer["signature_algorithm"].signature_algo
    try:
        if scheme == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), digest)
        elif scheme == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(digest))
        else:
            raise VerificationError(f"signature scheme {scheme} with this key type is not accepted")
    except (InvalidSignature, UnsupportedAlgorithm) as exc:
        raise VerificationError("timestamp token signature does not verify with the TSA certificate") from exc


def _check_imprint(tst: Any, expected: bytes) -> None:
    imprint = tst["message_imprint"]
    if imprint["hash_algorithm"]["algorithm"].native != "sha256":
        raise VerificationError("timestamp message imprint is not SHA-256")
    if tst["version"].native != "v1":
        raise VerificationError("TSTInfo version is not 1")
    if imprint["hashed_message"].native != expected:
        raise VerificationError("timestamp token is for a different root than this batch's")


def _check_eku(cert: x509.Certificate) -> None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound as exc:
        raise VerificationError("TSA certificate has no extended key usage (timeStamping required)") from exc
    if not eku.critical or list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        raise VerificationError("TSA certificate's extended key usage is not timeStamping alone, critical")


def _chain(cert: x509.Certificate, pool: list[x509.Certificate],
           anchors: list[x509.Certificate]) -> list[x509.Certificate]:
    """Walk issuers from the signer to a byte-identical trust anchor, checking each link."""
    anchor_der = {a.public_bytes(serialization.Encoding.DER) for a in anchors}
    chain = [cert]
    while len(chain) <= MAX_CHAIN:
        current = chain[-1]
        if current.public_bytes(serialization.Encoding.DER) in anchor_der:
            return chain
        issuer = _issuer_of(current, pool + anchors)
        if issuer is None:
            break
        chain.append(issuer)
    raise VerificationError("TSA certificate does not chain to a given trust anchor")


def _issuer_of(cert: x509.Certificate, candidates: list[x509.Certificate]) -> x509.Certificate | None:
    for issuer in candidates:
        if issuer.subject != cert.issuer or not _is_ca(issuer):
            continue
        try:
            cert.verify_directly_issued_by(issuer)
            return issuer
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _check_validity(chain: list[x509.Certificate], gen_time: datetime) -> None:
    for cert in chain:
        if not cert.not_valid_before_utc <= gen_time <= cert.not_valid_after_utc:
            raise VerificationError(f"genTime {gen_time:%Y-%m-%dT%H:%M:%SZ} is outside the validity of "
                                    f"{cert.subject.rfc4514_string()}")
