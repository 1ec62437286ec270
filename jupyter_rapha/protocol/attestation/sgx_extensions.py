"""The Intel SGX extension of a PCK leaf certificate (OID 1.2.840.113741.1.13.1).

Collateral is chosen and compared by what this extension says: the FMSPC picks the TCB
Info, and the TCB component SVNs plus the PCE SVN place the platform in a TCB level.
A minimal DER reader is enough: the extension is a SEQUENCE of (OID, value) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from .quote import QuoteFormatError

SGX_EXTENSIONS = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_TCB = "1.2.840.113741.1.13.1.2"
_FMSPC = "1.2.840.113741.1.13.1.4"
_PCESVN = _TCB + ".17"


@dataclass(frozen=True)
class PckPlatform:
    fmspc: str  # hex
    sgx_tcb_components: tuple[int, ...]  # 16 SVNs
    pce_svn: int


def platform_of(leaf: x509.Certificate) -> PckPlatform:
    try:
        raw = leaf.extensions.get_extension_for_oid(SGX_EXTENSIONS).value
    except x509.ExtensionNotFound as exc:
        raise QuoteFormatError("the PCK leaf certificate has no SGX extension") from exc
    if not isinstance(raw, x509.UnrecognizedExtension):
        raise QuoteFormatError("the PCK leaf SGX extension has an unexpected form")
    fields = _pairs(_sequence(raw.value))
    try:
        tcb = _pairs(fields[_TCB][1])
        components = tuple(_int(tcb[f"{_TCB}.{index}"]) for index in range(1, 17))
        return PckPlatform(fields[_FMSPC][1].hex(), components, _int(tcb[_PCESVN]))
    except KeyError as exc:
        raise QuoteFormatError("the PCK leaf SGX extension lacks FMSPC or TCB fields") from exc


def _int(tlv: tuple[int, bytes]) -> int:
    return int.from_bytes(tlv[1], "big")


def _sequence(der: bytes) -> bytes:
    tag, content, rest = _tlv(der)
    if tag != 0x30 or rest:
        raise QuoteFormatError("SGX extension is not a DER SEQUENCE")
    return content


def _pairs(content: bytes) -> dict[str, tuple[int, bytes]]:
    """Read the body of SEQUENCE { SEQUENCE { OID, value } ... } into {oid: (tag, content)}."""
    out: dict[str, tuple[int, bytes]] = {}
    while content:
        tag, pair, content = _tlv(content)
        oid_tag, oid, value_der = _tlv(pair)
        value_tag, value, extra = _tlv(value_der)
        if tag != 0x30 or oid_tag != 0x06 or extra:
            raise QuoteFormatError("SGX extension entry is not (OID, value)")
        out[_dotted(oid)] = (value_tag, value)
    return out


def _tlv(data: bytes) -> tuple[int, bytes, bytes]:
    if len(data) < 2:
        raise QuoteFormatError("truncated DER in the SGX extension")
    tag, length, pos = data[0], data[1], 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or len(data) < 2 + count:
            raise QuoteFormatError("bad DER length in the SGX extension")
        length, pos = int.from_bytes(data[2:2 + count], "big"), 2 + count
    if pos + length > len(data):
        raise QuoteFormatError("truncated DER in the SGX extension")
    return tag, data[pos:pos + length], data[pos + length:]


def _dotted(oid: bytes) -> str:
    parts, value = [], 0
    for byte in oid:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    if not parts:
        raise QuoteFormatError("empty OID in the SGX extension")
    first = min(parts[0] // 40, 2)
    return ".".join(str(p) for p in [first, parts[0] - 40 * first, *parts[1:]])
