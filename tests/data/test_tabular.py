"""FHIR R4 bulk-export NDJSON and CSV sources: declared feature and label mappings, only
numbers cross, consent applied before counting, broken rows skipped with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_kernel.data.broker import Broker
from edge_kernel.data.consent import OptOutList
from edge_kernel.data.registry import parse_dataset
from edge_kernel.data.source import SourceFault
from edge_kernel.data.sources import open_source
from edge_kernel.sandbox.runner import run_job
from edge_kernel.settings import Settings
from jupyter_rapha.protocol.errors import BadInput
from tests.edge.conftest_data import HMAC_KEY, make_spec

NHS = "https://fhir.nhs.uk/Id/nhs-number"
HBA1C, DIABETES = "http://loinc.org|4548-4", "http://snomed.info/sct|44054006"


def _fhir_entry(location: Path, fields=("hba1c", "sex", "birth_year", "diabetes")) -> object:
    return parse_dataset({
        "name": "ehr", "source": "fhir-ndjson", "location": str(location),
        "fields": {"hba1c": {"dtype": "float32", "shape": []}, "sex": {"dtype": "float32", "shape": []},
                   "birth_year": {"dtype": "float32", "shape": []},
                   "diabetes": {"dtype": "int64", "shape": [], "kind": "label"}},
        "features": {"hba1c": {"source": "fhir-observation", "code": HBA1C, "pick": "latest"},
                     "sex": {"source": "fhir-patient", "attribute": "gender", "map": {"female": 1, "male": 0}},
                     "birth_year": {"source": "fhir-patient", "attribute": "birthYear"}},
        "labels": {"diabetes": {"source": "fhir-condition", "code": DIABETES}},
        "options": {"patient_identifier_system": NHS}})


def _write_export(folder: Path, patients: int = 12) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    lines = {"Patient": [], "Observation": [], "Condition": []}
    truth = {}
    for i in range(patients):
        nhs = f"94{i:08d}"
        lines["Patient"].append({"resourceType": "Patient", "id": f"p{i}", "gender": "female" if i % 2 else "male",
                                 "birthDate": f"19{50 + i}-03-0{1 + i % 9}",
                                 "name": [{"family": f"SMITHFIELD{i}", "given": ["JANE"]}],
                                 "identifier": [{"system": NHS, "value": nhs},
                                                {"system": "urn:mrn", "value": f"MRN{i}"}]})
        if i != 3:  # patient 3 has no HbA1c: skipped
            for t, value in (("2023-01-01", 40.0 + i), ("2024-01-01", 50.0 + i)):
                lines["Observation"].append({"resourceType": "Observation", "status": "final",
                                             "subject": {"reference": f"Patient/p{i}"}, "effectiveDateTime": t,
                                             "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
                                             "valueQuantity": {"value": value, "unit": "mmol/mol"},
                                             "note": [{"text": f"seen with SMITHFIELD{i}"}]})
        if i % 3 == 0:
            lines["Condition"].append({"resourceType": "Condition", "subject": {"reference": f"Patient/p{i}"},
                                       "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}],
                                                "text": "DIABETES OF SMITHFIELD"}})
        truth[nhs] = (50.0 + i, float(i % 2), float(1950 + i), int(i % 3 == 0))
    for kind, resources in lines.items():
        text = "\n".join(json.dumps(r) for r in resources) + "\n"
        (folder / f"{kind}.000.ndjson").write_text(text + ("{broken json\n" if kind == "Observation" else ""))
    return truth


def _rows(source, index) -> dict[bytes, dict]:
    return {ref.pseudonym: source.load(ref) for ref in index.records}


def test_fhir_features_and_labels_follow_the_declared_mapping(tmp_path):
    truth = _write_export(tmp_path / "export")
    source = open_source(_fhir_entry(tmp_path / "export"), tmp_path / "export",
                         ["hba1c", "sex", "birth_year", "diabetes"], HMAC_KEY)
    index = source.index()
    assert len(index.records) == 11 and index.skipped == {"value missing": 1}
    values = sorted(tuple(float(r[k]) for k in ("hba1c", "sex", "birth_year", "diabetes"))
                    for r in _rows(source, index).values())
    assert values == sorted(v for nhs, v in truth.items() if nhs != "9400000003")
    for record in _rows(source, index).values():
        assert {k: (str(a.dtype), a.shape) for k, a in record.items()} == {
            "hba1c": ("float32", ()), "sex": ("float32", ()), "birth_year": ("float32", ()), "diabetes": ("int64", ())}


def test_fhir_consent_matches_any_identifier_before_counting(tmp_path):
    _write_export(tmp_path / "export")
    (tmp_path / "optout.txt").write_text("9400000000\nMRN5\n")
    consent = OptOutList.from_file(tmp_path / "optout.txt")
    source = open_source(_fhir_entry(tmp_path / "export"), tmp_path / "export", ["hba1c", "diabetes"], HMAC_KEY,
                         consent)
    index = source.index()
    assert len(index.records) == 9 and index.consent_excluded == 2
    broker = Broker(source, index, 100, 1)
    assert broker.summary().cohort_size == 9


def test_fhir_refuses_a_full_birth_date_or_a_code_without_system(tmp_path):
    entry = _fhir_entry(tmp_path)
    entry.features["birth_year"] = {"source": "fhir-patient", "attribute": "birthDate"}
    with pytest.raises(BadInput):
        open_source(entry, tmp_path, ["birth_year"], HMAC_KEY)
    entry.features["hba1c"] = {"source": "fhir-observation", "code": "4548-4"}
    with pytest.raises(BadInput):
        open_source(entry, tmp_path, ["hba1c"], HMAC_KEY)
    with pytest.raises(SourceFault):
        open_source(_fhir_entry(tmp_path / "missing"), tmp_path / "missing", ["hba1c"], HMAC_KEY).index()


def _csv_entry(path: Path, **options) -> object:
    return parse_dataset({
        "name": "labs", "source": "csv", "location": str(path),
        "fields": {"age": {"dtype": "float32", "shape": [1]}, "smoker": {"dtype": "float32", "shape": []},
                   "outcome": {"dtype": "int64", "shape": [], "kind": "label"}},
        "features": {"age": {"source": "csv-column", "column": "age"},
                     "smoker": {"source": "csv-column", "column": "smoker", "map": {"yes": 1, "no": 0}}},
        "labels": {"outcome": {"source": "csv-column", "column": "died_30d"}},
        "options": {"patient_column": "mrn", **options}})


CSV = """mrn,name,age,smoker,died_30d,notes
MRN1,DOE^JANE,71,yes,1,lives at 1 SYNTHETIC ROAD
MRN2,ROE^RICHARD,64,no,0,
MRN3,POE^EDGAR,abc,no,0,
MRN4,LOE^LINA,55,sometimes,1,
MRN5,KOE^KARL,80,no,,
,NOBODY,50,no,0,
MRN1,DOE^JANE,72,yes,1,again
MRN6,MOE^MARY,44,no,0,
"""


def test_csv_rows_become_numbers_only_and_bad_rows_are_skipped_with_a_reason(tmp_path):
    (tmp_path / "labs.csv").write_text(CSV)
    (tmp_path / "optout.txt").write_text("MRN6\n")
    source = open_source(_csv_entry(tmp_path / "labs.csv"), tmp_path / "labs.csv", ["age", "smoker", "outcome"],
                         HMAC_KEY, OptOutList.from_file(tmp_path / "optout.txt"))
    index = source.index()
    assert index.skipped == {"value not a number": 1, "value not in the declared map": 1, "value missing": 1,
                             "missing patient id": 1, "duplicate record": 1}
    assert index.consent_excluded == 1
    rows = sorted((float(r["age"][0]), float(r["smoker"]), int(r["outcome"])) for r in _rows(source, index).values())
    assert rows == [(64.0, 0.0, 0), (71.0, 1.0, 1)]
    blob = b"".join(a.tobytes() for r in _rows(source, index).values() for a in r.values())
    assert b"DOE" not in blob and b"SYNTHETIC" not in blob


def test_csv_refuses_identifier_columns_as_fields_and_missing_columns(tmp_path):
    (tmp_path / "labs.csv").write_text(CSV)
    entry = _csv_entry(tmp_path / "labs.csv")
    entry.features["age"] = {"source": "csv-column", "column": "mrn"}
    with pytest.raises(BadInput):
        open_source(entry, tmp_path / "labs.csv", ["age"], HMAC_KEY)
    entry = _csv_entry(tmp_path / "labs.csv")
    entry.labels["outcome"] = {"source": "csv-column", "column": "not_there"}
    with pytest.raises(SourceFault):
        open_source(entry, tmp_path / "labs.csv", ["outcome"], HMAC_KEY).index()
    entry = _csv_entry(tmp_path / "labs.csv")
    entry.features["smoker"] = {"source": "csv-column", "column": "smoker", "map": {"yes": "ja"}}
    with pytest.raises(BadInput):
        open_source(entry, tmp_path / "labs.csv", ["smoker"], HMAC_KEY)


TABULAR_CELL = '''
import torch
model = torch.nn.Linear(3, 2)
optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
loader = rapha.loader(batch_size=4)
for epoch in range(rapha.epochs):
    for batch in loader:
        x = torch.stack([batch["hba1c"] / 100, batch["sex"], (batch["birth_year"] - 1950) / 50], 1)
        loss = torch.nn.functional.cross_entropy(model(x), batch["diabetes"])
        optimiser.zero_grad(); loss.backward(); optimiser.step()
    rapha.log(loss=float(loss), keys=len(batch))
rapha.save(model)
'''


def test_a_model_trains_on_a_fhir_export_through_the_runner(tmp_path):
    _write_export(tmp_path / "export")
    entry = _fhir_entry(tmp_path / "export")
    spec = make_spec(TABULAR_CELL, fields=("hba1c", "sex", "birth_year", "diabetes"), max_records=8,
                     params={"epochs": 2})
    outcome = run_job(spec, entry, tmp_path / "export", list(spec.fields), HMAC_KEY, tmp_path / "job",
                      Settings(config_dir=tmp_path, edge_id="t"))
    assert outcome.status == "completed", (tmp_path / "job" / "stderr.txt").read_text()[-2000:]
    assert outcome.meter.records_used == 8 and outcome.metrics["keys"] == [4.0, 4.0]
    assert np.isfinite(outcome.metrics["loss"]).all()
