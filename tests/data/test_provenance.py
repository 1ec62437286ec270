"""Per-patient provenance: inclusion for used records, sorted-tree non-inclusion for the
rest (not drawn, opted out), each proof checked against the records_root; and the
``rapha-edge provenance`` command against a real edge's signed, anchored receipt."""

from __future__ import annotations

import json

import pydicom
import pytest

from edge_kernel.data.broker import Broker
from edge_kernel.data.consent import OptOutList
from edge_kernel.data.dicom_folder import DicomFolderSource
from edge_kernel.data.provenance import PROVENANCE_FILE, prove_patient, save_provenance
from jupyter_rapha.protocol.errors import NotFound, VerificationError
from jupyter_rapha.protocol.merkle import (inclusion_proof_from_dict, non_inclusion_proof_from_dict,
                                           verify_inclusion, verify_non_inclusion)
from tests.edge.conftest_data import HMAC_KEY
from tests.edge.test_broker import epoch, open_loader, served


def _patients(folder) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in folder.glob("*.dcm"):
        pid = str(pydicom.dcmread(path, stop_before_pixels=True).PatientID)
        counts[pid] = counts.get(pid, 0) + 1
    return counts


@pytest.fixture(scope="module")
def job(synth_folder, synth_entry, tmp_path_factory):
    patients = sorted(_patients(synth_folder))
    opted_out = patients[0]
    source = DicomFolderSource(synth_folder, synth_entry, ["image"], HMAC_KEY, OptOutList(frozenset({opted_out})))
    broker = Broker(source, source.index(), 20, 5)
    with served(broker) as (channel, _):
        epoch(channel, open_loader(channel)["loader"])
    summary = broker.summary()
    job_dir = tmp_path_factory.mktemp("job")
    save_provenance(job_dir, summary)
    return job_dir, summary, opted_out, patients


def _check(result, root_hex):
    root = bytes.fromhex(root_hex)
    for record in result["records"]:
        if record["used"]:
            leaf, proof = inclusion_proof_from_dict(record["inclusion"])
            assert leaf.hex() == record["record"]
            verify_inclusion(leaf, proof, root)
        else:
            verify_non_inclusion(bytes.fromhex(record["record"]),
                                 non_inclusion_proof_from_dict(record["non_inclusion"]), root)


def test_every_known_patient_gets_a_checkable_answer(job, synth_folder):
    job_dir, summary, opted_out, patients = job
    counts = _patients(synth_folder)
    statuses: dict[str, int] = {}
    for pid in patients:
        result = prove_patient(job_dir, HMAC_KEY, pid, summary.records_root_hex)
        assert len(result["records"]) == counts[pid]
        _check(result, summary.records_root_hex)
        for record in result["records"]:
            statuses[record["status"]] = statuses.get(record["status"], 0) + 1
    assert statuses["used"] == summary.records_used == 20
    assert statuses["opted out"] == counts[opted_out]
    assert statuses["not used"] == sum(counts.values()) - 20 - counts[opted_out]
    result = prove_patient(job_dir, HMAC_KEY, opted_out, summary.records_root_hex)
    assert all(not r["used"] and r["status"] == "opted out" for r in result["records"])


def test_unknown_patient_wrong_root_missing_file(job, tmp_path):
    job_dir, summary, _, _ = job
    assert prove_patient(job_dir, HMAC_KEY, "NOT-A-PATIENT", summary.records_root_hex)["records"] == []
    with pytest.raises(VerificationError):
        prove_patient(job_dir, HMAC_KEY, "x", "00" * 32)
    with pytest.raises(NotFound):
        prove_patient(tmp_path, HMAC_KEY, "x", summary.records_root_hex)
    assert (job_dir / PROVENANCE_FILE).stat().st_mode & 0o077 == 0
    # Only pseudonyms are kept: no patient id in the file.
    blob = (job_dir / PROVENANCE_FILE).read_bytes()
    assert not any(pid.encode() in blob for pid in job[3])


@pytest.mark.slow
def test_provenance_command_against_a_real_edge(demo_edge, capsys):
    from edge_kernel.cli import main as edge_cli
    from jupyter_rapha.client import EdgeClient, make_jobspec

    edge, key = demo_edge
    client = EdgeClient(edge.url, key)
    cell = ("import torch\nfor b in rapha.loader(batch_size=8):\n    rapha.log(n=len(b['image']))\n"
            "rapha.save({'w': torch.zeros(1)})\n")
    job_id = client.submit(make_jobspec(cell, "synthetic-cxr", ["image"], 10, 120, {}, key.key_id))
    status = client.wait(job_id, timeout=180)
    assert status["state"] == "completed", (status.get("reasons"), status.get("gates"))
    patients = _patients(edge.config / "data" / "synthetic-cxr")
    answers = {}
    for pid in sorted(patients):
        capsys.readouterr()
        assert edge_cli(["provenance", pid, job_id, "--config", str(edge.config)]) == 0
        document = json.loads(capsys.readouterr().out)
        payload = client.receipt(job_id)["envelope"]["payload"]
        predicate = json.loads(__import__("base64").b64decode(payload))["predicate"]
        assert document["records_root"] == predicate["dataset"]["records_root"]
        _check(document, document["records_root"])
        answers[pid] = document["answer"]
    assert sum(1 for a in answers.values() if a == "used") >= 1
    assert set(answers.values()) <= {"used", "not used"}
    assert edge_cli(["provenance", "NOBODY", "nojob", "--config", str(edge.config)]) == 1
