"""A dataset source over a FHIR R4 bulk-export (NDJSON): one record per Patient.

The export folder holds ``Patient*.ndjson``, ``Observation*.ndjson`` and
``Condition*.ndjson`` as a ``$export`` writes them. Mappings:

- ``{"source": "fhir-observation", "code": "SYSTEM|CODE", "pick": "latest"|"first"|"mean"}``:
  the numeric value (valueQuantity, valueInteger, valueDecimal, valueBoolean) of the
  patient's Observations with that code;
- ``{"source": "fhir-condition", "code": "SYSTEM|CODE"}``: 1 if the patient has a
  Condition with that code that is not refuted or entered-in-error, else 0;
- ``{"source": "fhir-patient", "attribute": "gender", "map": {...}}`` or ``"birthYear"``
  (the year only: a full birth date is a PS3.15 / Safe Harbor identifier).

The patient's id is ``Patient.identifier`` of ``options.patient_identifier_system``
when declared (e.g. a national number), else ``Patient.id``; the opt-out list is matched
against the id and every identifier value. Files are read line by line.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Iterator

import numpy as np

from jupyter_rapha.protocol.errors import BadInput

from .consent import OptOutList
from .registry import Dataset
from .source import Index, Skip, SourceFault
from .tabular import TabularSource, to_number

MAPPING_SOURCES = ("fhir-observation", "fhir-condition", "fhir-patient")
PATIENT_ATTRIBUTES = ("gender", "birthYear")
MAX_LINE_BYTES = 8 * 1024 * 1024
_NOT_A_CONDITION = ("refuted", "entered-in-error")


class FhirNdjsonSource(TabularSource):
    def __init__(self, root: Path, dataset: Dataset, fields: Iterable[str], hmac_key: bytes,
                 consent: OptOutList | None = None) -> None:
        super().__init__(dataset, fields, hmac_key, consent, MAPPING_SOURCES)
        self.root = Path(root)
        for name, mapping in self.mappings.items():
            if mapping["source"] == "fhir-patient" and mapping.get("attribute") not in PATIENT_ATTRIBUTES:
                raise BadInput(f"field {name}: a Patient attribute is one of {', '.join(PATIENT_ATTRIBUTES)}")
            if mapping["source"] != "fhir-patient" and "|" not in str(mapping.get("code", "")):
                raise BadInput(f"field {name}: 'code' is 'system|code'")

    def index(self, limit: int | None = None) -> Index:
        if not self.root.is_dir():
            raise SourceFault("the FHIR export folder is missing", hint="check the dataset location")
        patients = {resource_id: patient for resource_id, patient in islice(self._patients(), limit)}
        found = self._observed(patients)
        builder = self.builder()
        for resource_id, patient in patients.items():
            pid, other_ids = self._ids(patient)
            builder.add(pid, "Patient/" + resource_id, other_ids,
                        lambda p=patient, r=resource_id: self._values(p, found.get(r, {})))
        index, self.columns = builder.build()
        return index

    def _patients(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for resource in _resources(self.root, "Patient"):
            if isinstance(resource.get("id"), str) and resource["id"]:
                yield resource["id"], resource

    def _ids(self, patient: dict[str, Any]) -> tuple[str, list[str]]:
        values = [str(i.get("value")) for i in patient.get("identifier", []) if isinstance(i, dict) and i.get("value")]
        system = self.options.get("patient_identifier_system")
        chosen = [str(i["value"]) for i in patient.get("identifier", [])
                  if isinstance(i, dict) and system and i.get("system") == system and i.get("value")]
        return (chosen[0] if chosen else patient["id"]), [patient["id"], *values]

    def _observed(self, patients: dict[str, Any]) -> dict[str, dict[str, list[tuple[str, Any]]]]:
        """patient id -> field -> [(effective time, value)], only for the mapped codes."""
        wanted = {(m["source"], m["code"]): name for name, m in self.mappings.items() if "code" in m}
        found: dict[str, dict[str, list[tuple[str, Any]]]] = {}
        for kind, source in (("Observation", "fhir-observation"), ("Condition", "fhir-condition")):
            for resource in _resources(self.root, kind):
                subject = _subject(resource)
                if subject not in patients:
                    continue
                for code in _codes(resource):
                    name = wanted.get((source, code))
                    if name is not None:
                        found.setdefault(subject, {}).setdefault(name, []).append(_entry(kind, resource))
        return found

    def _values(self, patient: dict[str, Any], found: dict[str, list[tuple[str, Any]]]) -> dict[str, np.ndarray]:
        values = {}
        for name, mapping in self.mappings.items():
            spec = self.specs[name]
            if mapping["source"] == "fhir-patient":
                values[name] = to_number(_attribute(patient, mapping["attribute"]), mapping, spec)
            elif mapping["source"] == "fhir-condition":
                present = any(status not in _NOT_A_CONDITION for _, status in found.get(name, []))
                values[name] = to_number(int(present), mapping, spec)
            else:
                values[name] = to_number(_pick(found.get(name, []), mapping.get("pick", "latest")), mapping, spec)
        return values


def _resources(root: Path, kind: str) -> Iterator[dict[str, Any]]:
    for path in sorted(root.glob(f"{kind}*.ndjson")):
        try:
            with open(path, "rb") as handle:
                for line in handle:
                    if len(line) > MAX_LINE_BYTES or not line.strip():
                        continue
                    try:
                        resource = json.loads(line)
                    except ValueError:
                        continue  # a broken line is one resource lost, not the export
                    if isinstance(resource, dict) and resource.get("resourceType") == kind:
                        yield resource
        except OSError as exc:
            raise SourceFault("the FHIR export cannot be read") from exc


def _subject(resource: dict[str, Any]) -> str | None:
    reference = (resource.get("subject") or {}).get("reference") if isinstance(resource.get("subject"), dict) else None
    if isinstance(reference, str) and reference.startswith("Patient/"):
        return reference[len("Patient/"):]
    return None


def _codes(resource: dict[str, Any]) -> list[str]:
    code = resource.get("code")
    codings = code.get("coding", []) if isinstance(code, dict) else []
    return [f"{c.get('system')}|{c.get('code')}" for c in codings if isinstance(c, dict)]


def _entry(kind: str, resource: dict[str, Any]) -> tuple[str, Any]:
    if kind == "Condition":
        status = resource.get("verificationStatus", {})
        codings = status.get("coding", []) if isinstance(status, dict) else []
        codes = [c.get("code") for c in codings if isinstance(c, dict)]
        return "", codes[0] if codes else "confirmed"
    when = str(resource.get("effectiveDateTime") or resource.get("issued") or "")
    if resource.get("status") == "entered-in-error":
        return when, None
    for key in ("valueQuantity", "valueInteger", "valueDecimal", "valueBoolean"):
        if key in resource:
            value = resource[key]
            return when, value.get("value") if isinstance(value, dict) else value
    return when, None


def _pick(entries: list[tuple[str, Any]], pick: str) -> Any:
    numbers = [(when, value) for when, value in entries if isinstance(value, (int, float))]
    if not numbers:
        return None
    if pick == "mean":
        return float(np.mean([float(v) for _, v in numbers]))
    numbers.sort(key=lambda item: item[0])
    return numbers[0][1] if pick == "first" else numbers[-1][1]


def _attribute(patient: dict[str, Any], attribute: str) -> Any:
    if attribute == "gender":
        return patient.get("gender")
    birth = patient.get("birthDate")
    if isinstance(birth, str) and len(birth) >= 4 and birth[:4].isdigit():
        return int(birth[:4])
    raise Skip("value missing")
