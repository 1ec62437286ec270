"""Ed25519 keys: generation, encodings and key ids. Pure: bytes in, bytes out.

A public key travels as one line, ``ed25519:<base64 of the 32 raw bytes>``, which fits
a command-line argument or a config file; PEM (SubjectPublicKeyInfo / PKCS#8) is also
read and written so that standard tools (openssl, securesystemslib) can use the keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import BadInput, BadSignature

_PREFIX = "ed25519:"


@dataclass(frozen=True)
class PublicKey:
    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise BadInput("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> str:
        """Stable id: the first 16 bytes of SHA-256 over the raw key, in hex."""
        return hashlib.sha256(self.raw).hexdigest()[:32]

    def to_text(self) -> str:
        return _PREFIX + base64.b64encode(self.raw).decode("ascii")

    def to_pem(self) -> bytes:
        return Ed25519PublicKey.from_public_bytes(self.raw).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, signature: bytes, message: bytes) -> None:
        """Raise ``BadSignature`` unless ``signature`` is this key's over ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature as exc:
            raise BadSignature("signature does not verify with this key") from exc


class PrivateKey:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public = PublicKey(raw)

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes) -> PrivateKey:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise BadInput("not an unencrypted PEM private key", hint="create one with 'rapha keygen'") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise BadInput("the private key is not Ed25519", hint="create one with 'rapha keygen'")
        return cls(key)

    def to_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def load_public_key(data: str | bytes) -> PublicKey:
    """Read ``ed25519:BASE64`` or a PEM public key."""
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else data
    text = text.strip()
    if text.startswith(_PREFIX):
        try:
            return PublicKey(base64.b64decode(text[len(_PREFIX):], validate=True))
        except binascii.Error as exc:
            raise BadInput("public key is not valid base64 after 'ed25519:'") from exc
    if text.startswith("-----BEGIN PUBLIC KEY-----"):
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except ValueError as exc:
            raise BadInput("public key PEM does not parse") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise BadInput("public key is not Ed25519")
        return PublicKey(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    raise BadInput("public key must be 'ed25519:BASE64' or a PEM public key")
