"""Consent: an opt-out list of patient ids, applied by every source before counting.

The list is a plain text export (for example a national data opt-out file): one patient
id per line, blank lines and ``#`` comments ignored. A patient on the list is dropped at
index time, so their records never enter a cohort, never reach the meter and never reach
model code; the cohort size the policy sees is the size after this filter.

A configured list that is missing or unreadable stops the job (S4): running without it
would silently include patients who said no.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from jupyter_rapha.protocol.errors import SandboxFault

MAX_OPT_OUT_BYTES = 512 * 1024 * 1024


class OptOutList:
    def __init__(self, patient_ids: frozenset[str] = frozenset()) -> None:
        self._ids = patient_ids

    @classmethod
    def none(cls) -> OptOutList:
        return cls()

    @classmethod
    def from_file(cls, path: Path | None) -> OptOutList:
        if path is None:
            return cls()
        try:
            if Path(path).stat().st_size > MAX_OPT_OUT_BYTES:
                raise SandboxFault("the consent opt-out list is too large")
            text = Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SandboxFault("the consent opt-out list cannot be read",
                               hint="check the dataset's opt_out file") from exc
        return cls(frozenset(_ids(text)))

    def __len__(self) -> int:
        return len(self._ids)

    def tags(self, key: bytes) -> frozenset[bytes]:
        """The list as keyed tags (``consent_tag``), for an index that keeps no ids."""
        return frozenset(consent_tag(key, pid) for pid in self._ids)

    def excludes(self, *patient_ids: str) -> bool:
        """True if any of the patient's ids (e.g. an MRN and a national number) opted out."""
        return any(pid.strip() in self._ids for pid in patient_ids if pid)


def consent_tag(key: bytes, patient_id: str) -> bytes:
    """A patient id as the opt-out check compares it (stripped), keyed so that a stored
    tag cannot be tested against a guessed id without the hospital's key."""
    return hmac.new(key, b"consent\0" + patient_id.strip().encode("utf-8"), hashlib.sha256).digest()


def _ids(text: str) -> list[str]:
    found = []
    for line in text.splitlines():
        value = line.split("#", 1)[0].strip().strip(",;\"'")
        if value:
            found.append(value)
    return found
