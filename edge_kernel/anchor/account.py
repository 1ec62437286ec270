"""The edge's chain account: one secp256k1 key in a 0600 file (``protocol.chain_account``,
which the researcher's wallet shares)."""

from __future__ import annotations

from jupyter_rapha.protocol.chain_account import create_chain_account, load_chain_account

__all__ = ["create_chain_account", "load_chain_account"]
