"""The unsafe software stand-in for a hardware quote.

Machines without TDX or SGX (a laptop running the demo) still need the rest of the
pipeline to see a quote bound to the job. This one is an Ed25519 signature by the edge's
own key: it proves only that the edge key holder said so, nothing about isolation from
the host. It is always labelled unsafe and must never be mistaken for a TEE quote.

Encoding: canonical JSON ``{"format", "payload", "signature"}``; the signature covers a
domain prefix plus the canonical payload, so it cannot be replayed as a receipt or
request signature made with the same key.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from ..canonical import canonical_json
from ..errors import BadInput, RaphaError
from ..keys import PrivateKey, PublicKey

SOFTWARE_QUOTE_FORMAT = "rapha-unsafe-software-quote/v1"
_DOMAIN = SOFTWARE_QUOTE_FORMAT.encode("ascii") + b"\0"
UNSAFE_LABEL = "unsafe: software stand-in, no hardware isolation"


@dataclass(frozen=True)
class SoftwareQuote:
    report_data: bytes
    measurements: dict[str, str]
    edge_key_id: str
    signature: bytes
    payload: dict[str, Any]

    debug = False  # there is no hardware debug mode to detect; the whole quote is unsafe


def make_software_quote(report_data: bytes, measurements: dict[str, str], edge_key: PrivateKey) -> bytes:
    if len(report_data) != 64:
        raise BadInput("report data is 64 bytes")
    payload = {"report_data": report_data.hex(), "measurements": dict(measurements),
               "edge_key_id": edge_key.key_id, "label": UNSAFE_LABEL}
    signature = edge_key.sign(_DOMAIN + canonical_json(payload))
    return canonical_json({"format": SOFTWARE_QUOTE_FORMAT, "payload": payload,
                           "signature": base64.b64encode(signature).decode("ascii")})


def is_software_quote(data: bytes) -> bool:
    return data[:1] == b"{"


def parse_software_quote(data: bytes) -> SoftwareQuote:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput("software quote is not JSON") from exc
    if not isinstance(document, dict) or document.get("format") != SOFTWARE_QUOTE_FORMAT:
        raise BadInput(f"not a {SOFTWARE_QUOTE_FORMAT} document")
    try:
        if canonical_json(document) != data:
            raise BadInput("software quote is not in canonical form")
    except RaphaError as exc:
        raise BadInput("software quote is not in canonical form") from exc
    payload = document.get("payload")
    if not isinstance(payload, dict) or set(payload) != {"report_data", "measurements", "edge_key_id", "label"}:
        raise BadInput("software quote payload is malformed")
    return SoftwareQuote(_hex(payload["report_data"], 64), _measurements(payload["measurements"]),
                         str(payload["edge_key_id"]), _b64(document.get("signature")), payload)


def check_software_signature(quote: SoftwareQuote, edge_key: PublicKey) -> tuple[bool, str]:
    if quote.edge_key_id != edge_key.key_id:
        return False, f"software quote names edge key {quote.edge_key_id}, not {edge_key.key_id}"
    try:
        edge_key.verify(quote.signature, _DOMAIN + canonical_json(quote.payload))
    except RaphaError:
        return False, "software quote signature does not verify with the edge key"
    return True, f"Ed25519 signature by edge key {edge_key.key_id} ({UNSAFE_LABEL})"


def _hex(value: Any, length: int) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != length:
        raise BadInput(f"software quote field must be {length} bytes of hex")
    return raw


def _b64(value: Any) -> bytes:
    try:
        return base64.b64decode(value if isinstance(value, str) else "", validate=True)
    except binascii.Error as exc:
        raise BadInput("software quote signature is not base64") from exc


def _measurements(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BadInput("software quote measurements must map names to hex digests")
    return dict(value)
