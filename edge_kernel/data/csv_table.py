"""A dataset source over a CSV file of tabular EHR data: one record per row.

``options.patient_column`` names the patient id column (required) and
``options.record_column`` an optional per-row id (an encounter number); without it a
patient has one record and a second row for them is skipped as a duplicate. Fields map
to columns: ``{"source": "csv-column", "column": "hba1c"}``, text only through a ``map``.
Columns that are not mapped (names, addresses, notes) are never read into a record.
"""

from __future__ import annotations

import csv
from pathlib import Path
from collections.abc import Iterable

import numpy as np

from jupyter_rapha.protocol.errors import BadInput

from .consent import OptOutList
from .registry import Dataset
from .source import Index, SourceFault
from .tabular import TabularSource, to_number

MAPPING_SOURCES = ("csv-column",)
MAX_FIELD_BYTES = 1024 * 1024


class CsvSource(TabularSource):
    def __init__(self, path: Path, dataset: Dataset, fields: Iterable[str], hmac_key: bytes,
                 consent: OptOutList | None = None) -> None:
        super().__init__(dataset, fields, hmac_key, consent, MAPPING_SOURCES)
        self.path = Path(path)
        self.patient_column = self.options.get("patient_column")
        self.record_column = self.options.get("record_column")
        if not isinstance(self.patient_column, str) or not self.patient_column:
            raise BadInput("a CSV dataset needs options.patient_column")
        for name, mapping in self.mappings.items():
            if not isinstance(mapping.get("column"), str):
                raise BadInput(f"field {name}: 'column' names the CSV column")
            if mapping["column"] in (self.patient_column, self.record_column):
                raise BadInput(f"field {name}: an identifier column never becomes a field")

    def index(self, limit: int | None = None) -> Index:
        builder = self.builder()
        csv.field_size_limit(MAX_FIELD_BYTES)
        try:
            with open(self.path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                self._check_header(list(reader.fieldnames or []))
                for seen, row in enumerate(reader):
                    if limit is not None and seen >= limit:
                        break
                    patient_id = (row.get(self.patient_column) or "").strip()
                    record_id = (row.get(self.record_column) or "").strip() if self.record_column else "row"
                    builder.add(patient_id, record_id or "row", (), lambda r=row: self._values(r))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise SourceFault("the CSV file cannot be read", hint="check the dataset location") from exc
        index, self.columns = builder.build()
        return index

    def _check_header(self, names: list[str]) -> None:
        needed = {self.patient_column, *(m["column"] for m in self.mappings.values())}
        if self.record_column:
            needed.add(self.record_column)
        if not needed <= set(names):
            raise SourceFault("the CSV file lacks a declared column")

    def _values(self, row: dict[str, str]) -> dict[str, np.ndarray]:
        return {name: to_number(row.get(m["column"]), m, self.specs[name]) for name, m in self.mappings.items()}
