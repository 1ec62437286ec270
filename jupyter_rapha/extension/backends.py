"""Backends the extension is built from, swappable as ``Type`` traits.

The defaults are the real ones: ``EdgeClient`` speaks the edge's signed v1 API and
``FileKeyStore`` reads the researcher key file. Tests swap in subclasses through
``jp_server_config`` (for instance a client that alters a catalog in transit).
"""

from __future__ import annotations

from ..keystore import load_key
from ..protocol.keys import PrivateKey


class FileKeyStore:
    """The researcher key, held by the server so that browsers and kernels never sign."""

    def __init__(self, path: str = "") -> None:
        self.path = path

    def key(self) -> PrivateKey:
        # Empty path: $RAPHA_KEY, else ~/.config/rapha/researcher_ed25519.pem (as `rapha keygen`).
        return load_key(self.path or None)
