"""Intel DCAP quotes: SGX quote v3 and TDX quote v4, parsed from bytes.

Layout (all integers little-endian)::

    header 48 | report body (SGX 384, TDX 584) | u32 signature_data_len | signature data

Parsing is strict on purpose. The quote length is the logical length computed from the
header and ``signature_data_len``, never the buffer size: quote-generation interfaces
hand back fixed-size buffers padded with zeros, and bytes after the logical end are not
part of what was signed (they are ignored). Inside the signature data every nested
length must add up exactly, so a flipped length byte cannot shift fields unnoticed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import BadInput

HEADER_LEN = 48
SGX_BODY_LEN = 384
TDX_BODY_LEN = 584
QE_REPORT_LEN = 384
ECDSA_P256 = 2
TEE_SGX = 0x00000000
TEE_TDX = 0x00000081
CERT_PCK_CHAIN = 5
CERT_QE_REPORT = 6
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")


class QuoteFormatError(BadInput):
    """The bytes are not a well-formed DCAP quote of a supported version."""


@dataclass(frozen=True)
class SgxReportBody:
    """An SGX enclave REPORT body (also the QE report's layout)."""

    raw: bytes

    def _field(self, start: int, length: int) -> bytes:
        return self.raw[start:start + length]

    @property
    def cpusvn(self) -> bytes:
        return self._field(0, 16)

    @property
    def attributes(self) -> bytes:
        return self._field(48, 16)

    @property
    def mrenclave(self) -> bytes:
        return self._field(64, 32)

    @property
    def mrsigner(self) -> bytes:
        return self._field(128, 32)

    @property
    def isv_prod_id(self) -> int:
        return int.from_bytes(self._field(256, 2), "little")

    @property
    def isv_svn(self) -> int:
        return int.from_bytes(self._field(258, 2), "little")

    @property
    def report_data(self) -> bytes:
        return self._field(320, 64)

    @property
    def debug(self) -> bool:
        # ATTRIBUTES.FLAGS bit 1: a debug enclave's memory can be read by the host.
        return bool(self.attributes[0] & 0x02)

    def measurements(self) -> dict[str, str]:
        return {"mrenclave": self.mrenclave.hex(), "mrsigner": self.mrsigner.hex(),
                "isv_prod_id": str(self.isv_prod_id), "isv_svn": str(self.isv_svn),
                "attributes": self.attributes.hex()}


_TDX_FIELDS = {  # name: (offset, length) in the TD report body v1.0
    "tee_tcb_svn": (0, 16), "mrseam": (16, 48), "mrsignerseam": (64, 48), "seam_attributes": (112, 8),
    "td_attributes": (120, 8), "xfam": (128, 8), "mrtd": (136, 48), "mrconfigid": (184, 48),
    "mrowner": (232, 48), "mrownerconfig": (280, 48), "rtmr0": (328, 48), "rtmr1": (376, 48),
    "rtmr2": (424, 48), "rtmr3": (472, 48), "report_data": (520, 64),
}


@dataclass(frozen=True)
class TdxReportBody:
    raw: bytes

    def field(self, name: str) -> bytes:
        start, length = _TDX_FIELDS[name]
        return self.raw[start:start + length]

    @property
    def report_data(self) -> bytes:
        return self.field("report_data")

    @property
    def debug(self) -> bool:
        # TD_ATTRIBUTES bit 0 (TUD.DEBUG): the host VMM can read and change TD state.
        return bool(self.field("td_attributes")[0] & 0x01)

    def measurements(self) -> dict[str, str]:
        return {name: self.field(name).hex() for name in _TDX_FIELDS if name != "report_data"}


@dataclass(frozen=True)
class Quote:
    version: int
    tee: str  # "sgx" or "tdx"
    header: bytes
    body: SgxReportBody | TdxReportBody
    signature: bytes  # ECDSA P-256 r || s over header + body
    attestation_key: bytes  # P-256 point x || y
    qe_report: SgxReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes  # certification data type 5, exactly as in the quote
    length: int  # logical length; bytes after it in the buffer were ignored

    @property
    def signed_bytes(self) -> bytes:
        return self.header + self.body.raw

    @property
    def qe_vendor_id(self) -> bytes:
        return self.header[12:28]

    @property
    def report_data(self) -> bytes:
        return self.body.report_data

    @property
    def debug(self) -> bool:
        return self.body.debug


class _Reader:
    """Cursor over one bounded slice; every read past its end is a format error."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, length: int, name: str) -> bytes:
        if length < 0 or self.pos + length > len(self.data):
            raise QuoteFormatError(f"quote is truncated: {name} runs past the end of the {self.what}")
        chunk = self.data[self.pos:self.pos + length]
        self.pos += length
        return chunk

    def u16(self, name: str) -> int:
        return int(struct.unpack("<H", self.take(2, name))[0])

    def u32(self, name: str) -> int:
        return int(struct.unpack("<I", self.take(4, name))[0])

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise QuoteFormatError(f"{len(self.data) - self.pos} unexplained bytes at the end of the {self.what}")


def parse_quote(data: bytes) -> Quote:
    """Parse an SGX v3 or TDX v4 ECDSA quote; raise ``QuoteFormatError`` otherwise."""
    if len(data) < HEADER_LEN + 4:
        raise QuoteFormatError("quote is shorter than a quote header")
    version, key_type, tee_type = struct.unpack_from("<HHI", data, 0)
    tee, body_len = _kind(version, tee_type)
    if key_type != ECDSA_P256:
        raise QuoteFormatError(f"attestation key type {key_type} is not ECDSA P-256 (2)")
    reader = _Reader(data, "buffer")
    header = reader.take(HEADER_LEN, "header")
    body_raw = reader.take(body_len, "report body")
    sig_len = reader.u32("signature data length")
    sig = _Reader(reader.take(sig_len, "signature data"), "signature data")
    body: SgxReportBody | TdxReportBody = SgxReportBody(body_raw) if tee == "sgx" else TdxReportBody(body_raw)
    signature, attestation_key = sig.take(64, "quote signature"), sig.take(64, "attestation key")
    if version == 3:
        qe_report, qe_sig, auth, chain = _qe_block(sig)
    else:
        inner = _certification(sig, CERT_QE_REPORT)
        qe_report, qe_sig, auth, chain = _qe_block(inner)
        inner.finish()
    sig.finish()
    return Quote(version, tee, header, body, signature, attestation_key, SgxReportBody(qe_report),
                 qe_sig, auth, chain, reader.pos)


def _kind(version: int, tee_type: int) -> tuple[str, int]:
    if version == 3:
        # In a v3 header bytes 4..8 are reserved; v3 quotes are SGX only.
        return "sgx", SGX_BODY_LEN
    if version == 4 and tee_type == TEE_TDX:
        return "tdx", TDX_BODY_LEN
    if version == 4 and tee_type == TEE_SGX:
        return "sgx", SGX_BODY_LEN
    raise QuoteFormatError(f"quote version {version} with TEE type {tee_type:#x} is not supported",
                           hint="supported: SGX quote v3, TDX quote v4")


def _qe_block(reader: _Reader) -> tuple[bytes, bytes, bytes, bytes]:
    qe_report = reader.take(QE_REPORT_LEN, "QE report")
    qe_sig = reader.take(64, "QE report signature")
    auth = reader.take(reader.u16("QE auth data size"), "QE auth data")
    chain = _certification(reader, CERT_PCK_CHAIN).data
    return qe_report, qe_sig, auth, chain


def _certification(reader: _Reader, expected_type: int) -> _Reader:
    cert_type = reader.u16("certification data type")
    if cert_type != expected_type:
        raise QuoteFormatError(f"certification data type {cert_type}, expected {expected_type}",
                               hint="only PCK certificate chains (type 5) are supported")
    inner = _Reader(reader.take(reader.u32("certification data size"), "certification data"),
                    "certification data")
    if expected_type == CERT_PCK_CHAIN:
        inner.pos = len(inner.data)  # the whole block is the PEM chain
    return inner
