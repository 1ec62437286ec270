"""Where the researcher's signing key lives, and how it is created and read.

The key is the researcher's identity at every edge that registered it (S8): whoever
holds the file can spend that researcher's budgets. So it is created with mode 0600 in
a 0700 directory, and an existing key is never replaced unless the caller forces it —
overwriting would silently orphan the registration at every hospital.
"""

from __future__ import annotations

import os
from pathlib import Path

from .protocol.errors import BadInput, NotFound
from .protocol.keys import PrivateKey

KEY_ENV = "RAPHA_KEY"
CHAIN_KEY_SUFFIX = ".chain.key"
_PATHS: dict[str, Path] = {}  # key id -> the file each key was read from or written to
DEFAULT_KEY_PATH = Path("~/.config/rapha/researcher_ed25519.pem")


def default_key_path() -> Path:
    """``$RAPHA_KEY`` if set, else ``~/.config/rapha/researcher_ed25519.pem``."""
    configured = os.environ.get(KEY_ENV, "").strip()
    return Path(configured or DEFAULT_KEY_PATH).expanduser()


def create_key(path: str | Path | None = None, *, force: bool = False) -> PrivateKey:
    """Generate a key and write it to ``path`` (0600). Refuse to replace one unless ``force``."""
    target = Path(path).expanduser() if path else default_key_path()
    if target.exists() and not force:
        raise BadInput(f"a key already exists at {target}; refusing to overwrite it",
                       hint="pass --force to replace it (edges that registered the old key will refuse you)")
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = PrivateKey.generate()
    _write_private(target, key.to_pem())
    _PATHS[key.key_id] = target
    return key


def load_key(path: str | Path | None = None) -> PrivateKey:
    target = Path(path).expanduser() if path else default_key_path()
    if not target.is_file():
        raise NotFound(f"no researcher key at {target}", hint="create one with 'rapha keygen'")
    key = PrivateKey.from_pem(target.read_bytes())
    _PATHS[key.key_id] = target
    return key


def chain_key_path(signing_key: Path) -> Path:
    """The researcher's chain account key, beside their signing key: ``NAME.chain.key``."""
    return signing_key.with_name(signing_key.stem + CHAIN_KEY_SUFFIX)


def chain_key_of(key: PrivateKey) -> Path:
    """Where the chain key of a signing key loaded here lives (beside the signing key's
    file; beside the default key path for one made in memory)."""
    return chain_key_path(_PATHS.get(key.key_id, default_key_path()))


def ensure_chain_account(signing_key: Path) -> tuple[str, bool]:
    """The chain address beside ``signing_key``, creating the key (0600) when there is
    none; the flag says whether it was created. An existing one is never replaced: its
    locks and refunds belong to it."""
    from .protocol.chain_account import create_chain_account, load_chain_account

    path = chain_key_path(signing_key)
    if path.exists():
        return str(load_chain_account(path).address), False
    return create_chain_account(path), True


def load_or_create_key(path: str | Path | None = None) -> tuple[PrivateKey, bool]:
    """Return the key at ``path``, creating it first if there is none; the flag says which."""
    target = Path(path).expanduser() if path else default_key_path()
    if target.exists():
        return load_key(target), False
    return create_key(target), True


def public_key_line(key: PrivateKey) -> str:
    """The one line a hospital registers: ``ed25519:BASE64``."""
    return key.public.to_text()


def _write_private(target: Path, data: bytes) -> None:
    # Write beside the target and rename, so a crash never leaves a truncated key, and
    # create the file 0600 from the start so it is never briefly world-readable.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BadInput(f"cannot write the key to {target}: {exc.strerror}") from exc
    os.chmod(target, 0o600)
