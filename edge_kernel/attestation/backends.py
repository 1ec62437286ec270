"""Where quotes come from: TDX (configfs-tsm), SGX (Gramine) or the unsafe software stand-in.

Every backend takes the 64 report-data bytes that bind the job and returns quote bytes;
the gate verifies them with the same pure verifier researchers use, so a backend that
returns something wrong is caught there, not trusted here. Device paths are constructor
parameters so tests can point them at fake trees.
"""

from __future__ import annotations

import logging
import os
import secrets
import warnings
from pathlib import Path
from typing import Protocol
from collections.abc import Callable

from jupyter_rapha.protocol.attestation import UNSAFE_LABEL, make_software_quote
from jupyter_rapha.protocol.errors import AttestationDenied, Fault
from jupyter_rapha.protocol.keys import PrivateKey

log = logging.getLogger(__name__)

TSM_REPORT_ROOT = Path("/sys/kernel/config/tsm/report")
GRAMINE_ATTESTATION_ROOT = Path("/dev/attestation")
BACKEND_CHOICES = ("auto", "tdx", "sgx", "unsafe_software")
MAX_QUOTE_BYTES = 64 * 1024


class AttestationFault(Fault):
    """The TEE interface exists but did not produce a quote."""


class AttestationBackend(Protocol):
    name: str  # "tdx", "sgx" or "unsafe_software"

    def quote(self, report_data: bytes, measurements: dict[str, str]) -> bytes: ...


def _require_report_data(report_data: bytes) -> None:
    if len(report_data) != 64:
        raise AttestationFault("report data must be exactly 64 bytes")


def _read_bounded(path: Path) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read(MAX_QUOTE_BYTES + 1)
    if not data or len(data) > MAX_QUOTE_BYTES:
        raise AttestationFault(f"{path.name} returned {'no' if not data else 'an oversized'} quote")
    return data


class TdxBackend:
    """Linux configfs-tsm: mkdir an entry, write ``inblob``, read ``outblob``, rmdir.

    ``generation`` counts writes to the entry; reading it after the quote detects another
    process writing the same entry in between (the kernel's documented race check).
    """

    name = "tdx"

    def __init__(self, root: Path = TSM_REPORT_ROOT, *, mkdir: Callable[[Path], None] = os.mkdir,
                 rmdir: Callable[[Path], None] = os.rmdir) -> None:
        self.root, self._mkdir, self._rmdir = Path(root), mkdir, rmdir

    @classmethod
    def available(cls, root: Path = TSM_REPORT_ROOT) -> bool:
        return Path(root).is_dir()

    def quote(self, report_data: bytes, measurements: dict[str, str]) -> bytes:
        _require_report_data(report_data)
        entry = self.root / f"rapha-{secrets.token_hex(8)}"
        try:
            self._mkdir(entry)
        except OSError as exc:
            raise AttestationFault(f"cannot create a configfs-tsm report entry: {exc.strerror}") from exc
        try:
            return self._generate(entry, report_data)
        finally:
            self._remove(entry)

    def _generate(self, entry: Path, report_data: bytes) -> bytes:
        try:
            provider = (entry / "provider").read_text("ascii").strip()
            (entry / "inblob").write_bytes(report_data)
            quote = _read_bounded(entry / "outblob")
            generation = (entry / "generation").read_text("ascii").strip()
        except OSError as exc:
            raise AttestationFault(f"configfs-tsm report failed: {exc.strerror or type(exc).__name__}") from exc
        if provider != "tdx_guest":
            raise AttestationFault(f"configfs-tsm provider is {provider!r}, not tdx_guest")
        if generation != "1":
            raise AttestationFault("configfs-tsm entry was written by someone else while quoting")
        return quote

    def _remove(self, entry: Path) -> None:
        try:
            self._rmdir(entry)
        except OSError as exc:  # a leftover entry is harmless; the quote is still checked
            log.warning("could not remove configfs-tsm entry: %s", exc.strerror)


class SgxGramineBackend:
    """Gramine's pseudo-files: write ``user_report_data``, read ``quote`` (DCAP)."""

    name = "sgx"

    def __init__(self, root: Path = GRAMINE_ATTESTATION_ROOT) -> None:
        self.root = Path(root)

    @classmethod
    def available(cls, root: Path = GRAMINE_ATTESTATION_ROOT) -> bool:
        return (Path(root) / "quote").exists()

    def quote(self, report_data: bytes, measurements: dict[str, str]) -> bytes:
        _require_report_data(report_data)
        try:
            kind = (self.root / "attestation_type").read_text("ascii").strip()
            if kind != "dcap":
                raise AttestationFault(f"Gramine attestation type is {kind!r}, not dcap")
            (self.root / "user_report_data").write_bytes(report_data)
            return _read_bounded(self.root / "quote")
        except OSError as exc:
            raise AttestationFault(f"Gramine quote failed: {exc.strerror or type(exc).__name__}") from exc


class UnsafeSoftwareBackend:
    """An Ed25519 statement by the edge key in place of a TEE quote. It protects nothing
    against the host; it exists so the demo runs the same pipeline end to end."""

    name = "unsafe_software"

    def __init__(self, edge_key: PrivateKey) -> None:
        self.edge_key = edge_key

    def quote(self, report_data: bytes, measurements: dict[str, str]) -> bytes:
        _require_report_data(report_data)
        message = f"attestation backend unsafe_software in use: {UNSAFE_LABEL}"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        log.warning(message)
        return make_software_quote(report_data, measurements, self.edge_key)


def select_backend(choice: str, *, demo: bool, edge_key: PrivateKey | None,
                   tsm_root: Path = TSM_REPORT_ROOT, gramine_root: Path = GRAMINE_ATTESTATION_ROOT,
                   ) -> AttestationBackend:
    """The configured backend, or with "auto" the best one this machine offers.

    Raises ``AttestationDenied`` when no acceptable backend exists: a TEE that is asked
    for but absent, or the software stand-in outside demo mode.
    """
    if choice not in BACKEND_CHOICES:
        raise AttestationDenied(f"unknown attestation backend {choice!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    if choice in ("auto", "tdx") and TdxBackend.available(tsm_root):
        return TdxBackend(tsm_root)
    if choice in ("auto", "sgx") and SgxGramineBackend.available(gramine_root):
        return SgxGramineBackend(gramine_root)
    if choice in ("tdx", "sgx"):
        where = tsm_root if choice == "tdx" else gramine_root
        raise AttestationDenied(f"attestation backend {choice} is configured but {where} is absent")
    if not demo and choice == "unsafe_software":
        raise AttestationDenied("attestation backend unsafe_software is configured, but the software "
                                "backend is allowed only in demo mode")
    if not demo:
        raise AttestationDenied(f"no TEE found: {tsm_root} absent and {gramine_root} absent; "
                                "the software backend is allowed only in demo mode")
    if edge_key is None:
        raise AttestationDenied("the software attestation backend needs the edge key")
    return UnsafeSoftwareBackend(edge_key)


def backend_in_force(choice: str, *, demo: bool, tsm_root: Path = TSM_REPORT_ROOT,
                     gramine_root: Path = GRAMINE_ATTESTATION_ROOT) -> str:
    """The name of the backend ``select_backend`` picks on this machine, for catalogs and
    the published policy; "" when none is acceptable (every job is then refused at
    attestation). Publishing "auto" would hide which evidence a researcher gets."""
    if choice in ("auto", "tdx") and TdxBackend.available(tsm_root):
        return "tdx"
    if choice in ("auto", "sgx") and SgxGramineBackend.available(gramine_root):
        return "sgx"
    if choice in ("auto", "unsafe_software") and demo:
        return "unsafe_software"
    return ""
