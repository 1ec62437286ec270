"""Edge clients that alter what a real edge answered, as a network attacker could: swapped
in through the extension's edge_client_class trait."""

from __future__ import annotations

import base64
import json
from typing import Any

from jupyter_rapha.client import EdgeClient
from jupyter_rapha.protocol.canonical import canonical_json
from jupyter_rapha.protocol.dsse import sign_envelope
from jupyter_rapha.protocol.keys import PrivateKey

FOREIGN_KEY = PrivateKey.generate()


class FlippedByteClient(EdgeClient):
    """Flips one byte of the signed catalog payload (a price, a name: whatever is there)."""

    def catalog(self) -> dict[str, Any]:
        document = super().catalog()
        payload = bytearray(base64.b64decode(document["envelope"]["payload"]))
        payload[len(payload) // 2] ^= 0x01
        document["envelope"]["payload"] = base64.b64encode(bytes(payload)).decode()
        return document


class ForeignSignedClient(EdgeClient):
    """Serves a well-formed catalog offering everything, signed by a key nobody pinned."""

    def catalog(self) -> dict[str, Any]:
        document = super().catalog()
        catalog = json.loads(base64.b64decode(document["envelope"]["payload"]))
        catalog["datasets"].append(dict(catalog["datasets"][0], name="lure"))
        catalog["key_id"] = FOREIGN_KEY.key_id
        return {"envelope": sign_envelope(canonical_json(catalog), document["envelope"]["payloadType"], FOREIGN_KEY)}
