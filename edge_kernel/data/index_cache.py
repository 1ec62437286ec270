"""A folder dataset's index, kept between jobs and refreshed by each file's size and mtime.

Indexing reads every file's header; on a large dataset that is minutes before a job's
first batch. The outcome of each file's checks (its pseudonyms and content digest, or
the fixed reason it was skipped) is kept here, keyed by a digest of its path and valid
while its size and mtime (ns) are unchanged: an added or changed file is read again, a
removed one drops out. Consent is applied afresh every time (the opt-out list may have
changed), against a keyed tag of the patient id (``consent.consent_tag``), so the file
holds no identifier: no id, no path, no file name, only digests and the fixed reasons.

One file per dataset, granted reading (fields, labels) and pseudonym key, under the
edge's state directory (covered by the air-gap, mode 0600), replaced atomically.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

CacheKey = tuple[int, int]  # (size, mtime_ns)


@dataclass(frozen=True)
class Checked:
    """One file's index-time outcome: a usable record, or the reason it was skipped."""

    skip: str = ""
    pseudonym: bytes = b""
    patient: bytes = b""
    consent: bytes = b""  # consent.consent_tag of the patient id
    digest: bytes = b""  # SHA-256 of the file


def path_key(path: Path) -> str:
    return hashlib.sha256(os.fsencode(path)).hexdigest()


def stamp(info: os.stat_result) -> CacheKey:
    return info.st_size, info.st_mtime_ns


class IndexCache:
    def __init__(self, folder: Path, reading: bytes, key: bytes) -> None:
        tag = hmac.new(key, b"rapha index cache\0" + reading, hashlib.sha256).hexdigest()
        self.path = Path(folder) / f"index-{tag}.json"
        self._old = self._load()
        self._new: dict[str, list[object]] = {}
        self.reread = 0  # files whose headers were read (not found or changed); edge-side only

    def get(self, path: Path, info: os.stat_result) -> Checked | None:
        entry = self._old.get(path_key(path))
        if entry is None or tuple(entry[:2]) != stamp(info):
            return None
        checked = _checked(entry[2])
        if checked is not None:
            self._new[path_key(path)] = entry
        return checked

    def put(self, path: Path, info: os.stat_result, checked: Checked) -> None:
        self.reread += 1
        self._new[path_key(path)] = [*stamp(info), _doc(checked)]

    def save(self) -> None:
        """Replace the file with what this index saw (removed files drop out)."""
        if self._new == self._old:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = self.path.with_name(self.path.name + f".{os.getpid()}.{threading.get_ident()}.partial")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"version": 1, "files": self._new}, handle)
        os.replace(staging, self.path)
        self._old = dict(self._new)

    def _load(self) -> dict[str, list[object]]:
        try:
            doc = json.loads(self.path.read_text("utf-8"))
            files = doc["files"] if doc.get("version") == 1 else {}
            return {k: v for k, v in files.items() if isinstance(v, list) and len(v) == 3}
        except FileNotFoundError:
            return {}
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            return {}  # damaged: every header is read again, and the file rewritten


def _doc(checked: Checked) -> dict[str, str]:
    if checked.skip:
        return {"skip": checked.skip}
    return {"p": checked.pseudonym.hex(), "pt": checked.patient.hex(), "c": checked.consent.hex(),
            "d": checked.digest.hex()}


def _checked(doc: object) -> Checked | None:
    if not isinstance(doc, dict):
        return None
    try:
        if "skip" in doc:
            return Checked(skip=str(doc["skip"]))
        return Checked(pseudonym=bytes.fromhex(doc["p"]), patient=bytes.fromhex(doc["pt"]),
                       consent=bytes.fromhex(doc["c"]), digest=bytes.fromhex(doc["d"]))
    except (KeyError, TypeError, ValueError):
        return None  # an entry that does not read: that file's header is read again
