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
    return key


def load_key(path: str | Path | None = None) -> PrivateKey:
    target = Path(path).expanduser() if path else default_key_path()
    if not target.is_file():
        raise NotFound(f"no researcher key at {target}", hint="create one with 'rapha keygen'")
    return PrivateKey.from_pem(target.read_bytes())


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
