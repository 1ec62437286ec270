"""The runtime measurement: digests of what this edge runs besides the TEE's own view.

A TD's MRTD/RTMRs or an enclave's MRENCLAVE say which image booted; they do not say
which edge code, policies and air-gap binary this job was checked and run with. These
digests go into the report-data commitment, so a quote for this job also commits to them
and a reviewer can compare them with a published release.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import edge_kernel
import jupyter_rapha.protocol
from jupyter_rapha.protocol.attestation import RuntimeMeasurement

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def tree_digest(root: Path, pattern: str = "*") -> str:
    """SHA-256 over sorted (relative path, SHA-256 of content) lines of the files under root.

    Paths are part of the digest so that moving code between files changes it; caches
    (``__pycache__``) are left out because they differ between identical installs.
    """
    lines = []
    for path in sorted(p for p in Path(root).rglob(pattern) if p.is_file() and "__pycache__" not in p.parts):
        relative = path.relative_to(root).as_posix()
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {relative}\n")
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def edge_code_digest() -> str:
    """The installed edge_kernel and jupyter_rapha/protocol Python sources."""
    edge = tree_digest(Path(edge_kernel.__file__).parent, "*.py")
    protocol = tree_digest(Path(jupyter_rapha.protocol.__file__).parent, "*.py")
    return hashlib.sha256(f"edge_kernel {edge}\njupyter_rapha.protocol {protocol}\n".encode("ascii")).hexdigest()


def file_digest(path: Path | None) -> str:
    """SHA-256 of a file, or of b"" when there is none (the air-gap gate judges absence)."""
    if path is None or not Path(path).is_file():
        return EMPTY_SHA256
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def runtime_measurement(policy_dir: Path | None, airgap_binary: Path | None) -> RuntimeMeasurement:
    policies = tree_digest(policy_dir) if policy_dir is not None and Path(policy_dir).is_dir() else EMPTY_SHA256
    return RuntimeMeasurement(edge_code_digest(), policies, file_digest(airgap_binary))
