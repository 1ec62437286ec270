"""What the tabular sources (FHIR bulk export, CSV) share: a declared mapping per field,
records held as numeric columns, and the rule that only numbers cross.

A field's mapping (``dataset.features`` for features, ``dataset.labels`` for labels)
says where its value lives. Strings become numbers only through a declared ``map``
(``{"female": 1, "male": 0}``); any other text is refused, so free text, names and
identifiers can never become a field (S2). A record missing a value is skipped.
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from collections.abc import Iterable

import numpy as np

from jupyter_rapha.protocol.errors import BadInput

from .consent import OptOutList
from .dicom_record import numeric_label
from .pseudonym import patient_pseudonym, record_pseudonym
from .registry import Dataset, FieldSpec
from .source import Index, RecordRef, Skip, granted_specs, sorted_index


def field_mappings(dataset: Dataset, specs: dict[str, FieldSpec],
                   sources: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    mappings = {}
    for name, spec in specs.items():
        mapping = (dataset.labels if spec.kind == "label" else dataset.features).get(name)
        if not isinstance(mapping, dict) or mapping.get("source") not in sources:
            raise BadInput(f"field {name} needs a mapping with source one of {', '.join(sources)}")
        if int(np.prod(spec.shape)) != 1:
            raise BadInput(f"field {name}: a tabular field holds one number (shape [] or [1])")
        if "map" in mapping and not (isinstance(mapping["map"], dict) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in mapping["map"].values())):
            raise BadInput(f"field {name}: 'map' must map values to numbers")
        mappings[name] = mapping
    return mappings


def to_number(value: Any, mapping: dict[str, Any], spec: FieldSpec) -> np.ndarray:
    """One value as the field's dtype; text only through the declared map."""
    if isinstance(mapping.get("map"), dict):
        value = mapping["map"].get(str(value).strip()) if value is not None else None
        if value is None:
            raise Skip("value not in the declared map")
    elif isinstance(value, str):
        try:
            value = float(value.strip()) if value.strip() else None
        except ValueError as exc:
            raise Skip("value not a number") from exc
    if value is None:
        raise Skip("value missing")
    return numeric_label(value, spec)


class TabularIndexBuilder:
    """Collects rows into columns, applying consent and dropping duplicates."""

    def __init__(self, specs: dict[str, FieldSpec], key: bytes, consent: OptOutList) -> None:
        self.specs, self.key, self.consent = specs, key, consent
        self.columns: dict[str, list[np.ndarray]] = {name: [] for name in specs}
        self.by_pseudonym: dict[bytes, RecordRef] = {}
        self.skipped: Counter[str] = Counter()
        self.excluded: list[RecordRef] = []

    def add(self, patient_id: str, record_id: str, other_ids: Iterable[str], values: Any) -> None:
        """``values`` is a callable returning {field: array} or raising Skip."""
        try:
            pseudonym = record_pseudonym(self.key, patient_id, record_id)
            patient = patient_pseudonym(self.key, patient_id)
        except BadInput:
            self.skipped["missing patient id"] += 1
            return
        if self.consent.excludes(patient_id, *other_ids):
            self.excluded.append(RecordRef(pseudonym, patient))
            return
        if pseudonym in self.by_pseudonym:
            self.skipped["duplicate record"] += 1
            return
        try:
            arrays = values()
        except Skip as skip:
            self.skipped[skip.reason] += 1
            return
        row = len(self.columns[next(iter(self.specs))])
        for name in self.specs:
            self.columns[name].append(arrays[name])
        self.by_pseudonym[pseudonym] = RecordRef(pseudonym, patient, str(row))

    def build(self) -> tuple[Index, dict[str, np.ndarray]]:
        columns = {name: (np.stack(values) if values else np.empty((0, *spec.shape), spec.dtype))
                   for (name, values), spec in zip(self.columns.items(), self.specs.values(), strict=True)}
        return sorted_index(self.by_pseudonym, dict(self.skipped), self.excluded), columns


class TabularSource:
    """Base: ``_build()`` fills the columns once at index time; ``load`` slices a row."""

    def __init__(self, dataset: Dataset, fields: Iterable[str], hmac_key: bytes, consent: OptOutList | None,
                 sources: tuple[str, ...]) -> None:
        self.specs = granted_specs(dataset, fields)
        self.mappings = field_mappings(dataset, self.specs, sources)
        self.options = dataset.options
        self.hmac_key, self.consent = hmac_key, consent or OptOutList.none()
        self.columns: dict[str, np.ndarray] = {}

    def builder(self) -> TabularIndexBuilder:
        return TabularIndexBuilder(self.specs, self.hmac_key, self.consent)

    def load(self, ref: RecordRef) -> dict[str, np.ndarray]:
        row = int(ref.location)
        return {name: column[row] for name, column in self.columns.items()}
