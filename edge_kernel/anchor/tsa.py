"""TsaAnchor: batch roots timestamped by an RFC 3161 Time-Stamp Authority instead of
published on a chain, for institutions that cannot use a public chain.

It plays the outbox's BatchAnchor role. The TSA round trip happens in ``sign_anchor``,
the outbox step that may fail with nothing stored: the token is checked against the
configured TSA certificate before the outbox stores it, so an edge never hands out a
token a verifier would refuse. A stored token is final (there is nothing to mine or
confirm), so ``mined_block`` answers at once and ``batch_anchor_block`` writes the
``rfc3161-batch`` form. Retries are the outbox's: every failure here is one AnchorFault.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import urllib.request
from pathlib import Path
from typing import Any

from jupyter_rapha.protocol.errors import AnchorFault, BadInput, VerificationError
from jupyter_rapha.protocol.merkle import MerkleTree
from jupyter_rapha.protocol.timestamp import (REQUEST_TYPE, RESPONSE_TYPE, check_response_token, timestamp_anchor,
                                              timestamp_request, token_from_response)
from jupyter_rapha.protocol.timestamp_token import TimestampInfo, check_token

from .base import SignedAnchor, anchor_faults, require_digest

MAX_RESPONSE_BYTES = 64 * 1024


class TsaAnchor:
    chain_id = 0  # no chain: the receipt's edge block says so
    address = ""

    def __init__(self, url: str, trust_pem: bytes, *, timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise BadInput("chain.tsa_url must be http:// or https://")
        if b"-----BEGIN CERTIFICATE-----" not in trust_pem:
            raise BadInput("chain.tsa_certificate holds no PEM certificate")
        self.url, self.trust_pem, self.timeout = url, trust_pem, float(timeout)
        self._lock = threading.Lock()
        self._last: tuple[bytes, TimestampInfo] | None = None

    @classmethod
    def from_files(cls, url: str, certificate: Path | None, timeout: float) -> TsaAnchor:
        if certificate is None or not certificate.is_file():
            raise BadInput("chain.backend 'rfc3161' needs chain.tsa_certificate: the TSA's PEM certificate or chain")
        return cls(url, certificate.read_bytes(), timeout=timeout)

    def timestamp(self, digest: bytes) -> bytes:
        """Ask the TSA for a token over ``digest`` and check it; the token's DER."""
        digest = require_digest(digest)
        nonce = secrets.randbits(63)  # a fresh nonce per request: a replayed old answer is refused
        with self._lock:
            with anchor_faults("reach the timestamp authority"):
                body = self._post(timestamp_request(digest, nonce))
            try:
                token = token_from_response(body)
                info = check_response_token(token, digest, nonce, self.trust_pem)
            except VerificationError as exc:
                raise AnchorFault(f"timestamp refused: {exc.diagnostics()}") from exc
            self._last = (token, info)
        return token

    def _post(self, request: bytes) -> bytes:
        http = urllib.request.Request(self.url, data=request, method="POST",
                                      headers={"Content-Type": REQUEST_TYPE, "Accept": RESPONSE_TYPE})
        with urllib.request.urlopen(http, timeout=self.timeout) as answer:
            if answer.status != 200 or answer.headers.get_content_type() != RESPONSE_TYPE:
                raise AnchorFault("the timestamp authority did not answer with a timestamp reply")
            body = answer.read(MAX_RESPONSE_BYTES + 1)
        if len(body) > MAX_RESPONSE_BYTES:
            raise AnchorFault("the timestamp authority's answer is too large")
        return bytes(body)

    # -- the single-receipt Anchor role ------------------------------------------------

    def anchor(self, digest: bytes) -> dict[str, Any]:
        tree = MerkleTree([require_digest(digest)])
        return self.batch_anchor_block(tree, 0, self.timestamp(digest))

    # -- the BatchAnchor role (the outbox) ---------------------------------------------

    def sign_anchor(self, digest: bytes) -> SignedAnchor:
        token = self.timestamp(digest)
        return SignedAnchor(token, "tsa:" + hashlib.sha256(token).hexdigest(), 0)

    def broadcast(self, raw: bytes) -> None:
        """Nothing to send: the token is already held."""

    def mined_block(self, tx_hash: str) -> int | None:
        return 0  # a stored token is final

    def head_block(self) -> int:
        return 0

    def confirmed_nonce(self) -> int:
        return 0

    def batch_anchor_block(self, tree: MerkleTree, index: int, token: bytes) -> dict[str, Any]:
        """The receipt's anchor block; the stored token is checked again (a damaged
        database must not put a token into receipts that no verifier accepts)."""
        info = self._info(token, tree.root)
        return timestamp_anchor(tree, index, tsa=self.url, token_der=token,
                                gen_time=f"{info.gen_time:%Y-%m-%dT%H:%M:%SZ}")

    def _info(self, token: bytes, root: bytes) -> TimestampInfo:
        last = self._last
        if last is not None and last[0] == token and last[1].hashed_message == root:
            return last[1]
        try:
            info = check_token(token, root, self.trust_pem)
        except VerificationError as exc:
            raise AnchorFault(f"stored timestamp token does not verify: {exc.diagnostics()}") from exc
        self._last = (token, info)
        return info
