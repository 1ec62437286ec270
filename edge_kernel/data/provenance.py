"""Per-patient provenance: was this patient's record used in that job?

After a run the edge keeps, next to the job and never released, the job's sorted record
pseudonyms (the leaves of the receipt's ``records_root``) and every record it knew of
with its patient pseudonym and status ("used", "not used", "opted out"). From these,
``prove_patient`` answers a patient's access request with, per record of theirs, an
inclusion proof (used) or a sorted-tree non-inclusion proof (not used), each checked
against the root the edge signed and anchored before it is printed.

The file holds only HMAC pseudonyms, no identifiers: finding a patient needs the
hospital's key. It also keeps the pseudonyms of the records held back from the job for
the membership-inference check; ``record_sets`` gives the check both sets.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_rapha.protocol.dsse import verify_envelope
from jupyter_rapha.protocol.errors import NotFound, VerificationError
from jupyter_rapha.protocol.keys import PublicKey
from jupyter_rapha.protocol.merkle import (MerkleTree, inclusion_proof_to_dict, non_inclusion_proof_to_dict,
                                           prove_non_inclusion, verify_inclusion, verify_non_inclusion)

from .pseudonym import patient_pseudonym

PROVENANCE_FILE = "provenance.sqlite"


def save_provenance(job_dir: Path, meter: Any, reading: str = "") -> Path:
    """Write the job's leaves and known records atomically; returns the file. ``reading``:
    the digest of how the job's records were read (``reload.reading_digest``), so that a
    reload for the disclosure checks can tell when the dataset's definition changed."""
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / PROVENANCE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with sqlite3.connect(tmp) as db:
        db.execute("CREATE TABLE leaves (pseudonym BLOB PRIMARY KEY) WITHOUT ROWID")
        db.execute("CREATE TABLE records (patient BLOB, pseudonym BLOB, status TEXT)")
        db.execute("CREATE INDEX records_patient ON records (patient)")
        db.execute("CREATE TABLE held_back (pseudonym BLOB PRIMARY KEY) WITHOUT ROWID")
        db.execute("CREATE TABLE reading (digest TEXT)")
        db.execute("INSERT INTO reading VALUES (?)", (reading,))
        db.executemany("INSERT INTO leaves VALUES (?)", ((bytes.fromhex(p),) for p in meter.pseudonyms_hex))
        db.executemany("INSERT INTO held_back VALUES (?)",
                       ((bytes.fromhex(p),) for p in meter.held_back_hex))
        db.executemany("INSERT INTO records VALUES (?, ?, ?)",
                       ((patient, record, status) for record, patient, status in meter.records_known))
    db.close()
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class RecordSets:
    """The pseudonyms the job was served (the Merkle leaves) and those held back from it,
    each sorted; edge-side only."""

    used: tuple[bytes, ...]
    held_back: tuple[bytes, ...]
    reading: str = ""  # how the records were read for the job; "" when not kept


def record_sets(job_dir: Path) -> RecordSets:
    """The job's used and held-back record pseudonyms, for the disclosure checks."""
    path = job_dir / PROVENANCE_FILE
    if not path.is_file():
        raise NotFound("no provenance was kept for this job")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        used = tuple(row[0] for row in db.execute("SELECT pseudonym FROM leaves ORDER BY pseudonym"))
        held_back = tuple(row[0] for row in db.execute("SELECT pseudonym FROM held_back ORDER BY pseudonym"))
        reading = db.execute("SELECT digest FROM reading").fetchone()
    db.close()
    return RecordSets(used, held_back, reading[0] if reading else "")


def signed_records_root(receipt: dict[str, Any], edge_key: PublicKey) -> str:
    """The records_root from the receipt's signed bytes (never from unsigned fields)."""
    payload = verify_envelope(receipt["envelope"], edge_key)
    try:
        predicate = json.loads(payload)["predicate"]
        return str(predicate["dataset"]["records_root"])
    except (ValueError, KeyError, TypeError) as exc:
        raise VerificationError("the receipt carries no records_root") from exc


def prove_patient(job_dir: Path, key: bytes, patient_id: str, records_root_hex: str) -> dict[str, Any]:
    """Proofs for every record of the patient the job knew of, each verified here."""
    path = job_dir / PROVENANCE_FILE
    if not path.is_file():
        raise NotFound("no provenance was kept for this job")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        leaves = [row[0] for row in db.execute("SELECT pseudonym FROM leaves ORDER BY pseudonym")]
        rows = db.execute("SELECT pseudonym, status FROM records WHERE patient = ? ORDER BY pseudonym",
                          (patient_pseudonym(key, patient_id),)).fetchall()
    db.close()
    root = bytes.fromhex(records_root_hex)
    tree = MerkleTree(leaves)
    if tree.root != root:
        raise VerificationError("the kept leaves do not give the receipt's records_root")
    return {"records_root": records_root_hex, "tree_size": len(leaves),
            "records": [_proof(tree, leaves, record, status, root) for record, status in rows]}


def _proof(tree: MerkleTree, leaves: list[bytes], record: bytes, status: str, root: bytes) -> dict[str, Any]:
    import bisect

    position = bisect.bisect_left(leaves, record)
    if position < len(leaves) and leaves[position] == record:
        proof = tree.prove(position)
        verify_inclusion(record, proof, root)
        return {"record": record.hex(), "used": True, "status": "used",
                "inclusion": inclusion_proof_to_dict(record, proof)}
    absent = prove_non_inclusion(leaves, record)
    verify_non_inclusion(record, absent, root)
    return {"record": record.hex(), "used": False, "status": status,
            "non_inclusion": non_inclusion_proof_to_dict(absent)}
