"""Record pseudonyms: HMAC-SHA256 under the hospital's pseudonym key (S2, S3).

A pseudonym names one record (one DICOM instance) in the meter and in the receipt's
Merkle tree without revealing who the patient is. It is keyed so that nobody without
the hospital's key can test a guessed PatientID against a receipt.
"""

from __future__ import annotations

import hashlib
import hmac

from jupyter_rapha.protocol.errors import BadInput

MIN_KEY_BYTES = 16
_DOMAIN = b"record\0"


def record_pseudonym(key: bytes, patient_id: str, instance_uid: str) -> bytes:
    """``HMAC-SHA256(key, "record\\0" + PatientID + "\\0" + SOPInstanceUID)``, 32 bytes."""
    if len(key) < MIN_KEY_BYTES:
        # A short key would let anyone brute-force the key and then re-identify records.
        raise BadInput(f"the pseudonym key must hold at least {MIN_KEY_BYTES} bytes")
    if not patient_id or not instance_uid:
        raise BadInput("a record needs a patient id and an instance uid")
    if "\0" in patient_id or "\0" in instance_uid:
        # The NUL separator must be unambiguous, else two records could share a pseudonym.
        raise BadInput("identifiers may not contain NUL")
    message = _DOMAIN + patient_id.encode("utf-8") + b"\0" + instance_uid.encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).digest()


def derive_seed(key: bytes, purpose: str, context: str) -> int:
    """A 63-bit seed only the edge can compute (e.g. the cohort draw for one job)."""
    message = purpose.encode("utf-8") + b"\0" + context.encode("utf-8")
    return int.from_bytes(hmac.new(key, message, hashlib.sha256).digest()[:8], "big") >> 1


_PATIENT_DOMAIN = b"patient\0"


def patient_pseudonym(key: bytes, patient_id: str) -> bytes:
    """``HMAC-SHA256(key, "patient\\0" + PatientID)``: finds a patient's records in a job's
    provenance file without storing the id there. Never leaves the edge."""
    if len(key) < MIN_KEY_BYTES:
        raise BadInput(f"the pseudonym key must hold at least {MIN_KEY_BYTES} bytes")
    if not patient_id or "\0" in patient_id:
        raise BadInput("a patient id must be non-empty and free of NUL")
    return hmac.new(key, _PATIENT_DOMAIN + patient_id.encode("utf-8"), hashlib.sha256).digest()


_SERIES_DOMAIN = b"series\0"


def series_pseudonym(key: bytes, patient_id: str, series_uid: str) -> bytes:
    """``HMAC-SHA256(key, "series\\0" + PatientID + "\\0" + SeriesInstanceUID)``: the record
    pseudonym of a dataset whose records are series (volumes). Its own domain, so a series
    never shares a pseudonym with an instance whose SOPInstanceUID equals the series UID."""
    if len(key) < MIN_KEY_BYTES:
        raise BadInput(f"the pseudonym key must hold at least {MIN_KEY_BYTES} bytes")
    if not patient_id or not series_uid:
        raise BadInput("a series needs a patient id and a series uid")
    if "\0" in patient_id or "\0" in series_uid:
        raise BadInput("identifiers may not contain NUL")
    message = _SERIES_DOMAIN + patient_id.encode("utf-8") + b"\0" + series_uid.encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).digest()
