"""A chain account: one secp256k1 key in a 0600 file.

The edge's (``keys/chain.key``) lets its holder send transactions "from the edge": anyone
who reads it can forge anchors and claims. A researcher's (beside their signing key,
written by ``rapha keygen``) pays their escrow locks. So the file is created owner-only
and refused if others can read it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from .errors import BadInput

_KEY_MODE = 0o600


def create_chain_account(path: Path) -> str:
    """Write a fresh private key (hex) to ``path`` and return its checksummed address.
    Never overwrites: losing the old key would orphan every anchor made with it."""
    path = Path(path)
    account = Account.create()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _KEY_MODE)
    except FileExistsError:
        raise BadInput(f"chain key {path.name} already exists", hint="refusing to overwrite it") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(account.key.hex() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, _KEY_MODE)  # the umask may have narrowed it; never widened
    return str(account.address)


def load_chain_account(path: Path) -> LocalAccount:
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError:
        raise BadInput(f"cannot read chain key {path.name}",
                       hint="an edge's is made by 'rapha-edge init', a researcher's by 'rapha keygen'") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BadInput(f"chain key {path.name} is accessible to other users", hint="chmod 600 it")
    try:
        account: LocalAccount = Account.from_key(text if text.startswith("0x") else "0x" + text)
        return account
    except (ValueError, TypeError):
        raise BadInput(f"chain key {path.name} is not a secp256k1 private key in hex") from None
