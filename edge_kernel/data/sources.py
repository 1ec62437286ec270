"""How a dataset picks its source: the one factory over every source implementation.

It lives apart from ``source.py`` (the interface every implementation imports), so the
interface does not import its implementations back.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Iterable

from jupyter_rapha.protocol.errors import BadInput

from .consent import OptOutList
from .registry import Dataset
from .source import Source


def open_source(dataset: Dataset, location: Path | str, fields: Iterable[str], hmac_key: bytes,
                consent: OptOutList | None = None, cache_dir: Path | None = None) -> Source:
    """The source the dataset declares; an unknown source is refused, never guessed.
    ``cache_dir``: the edge's cache folder for this dataset, where a source keeps its index
    between jobs (``index_cache.py``; the folder source)."""
    consent = consent or OptOutList.none()
    if dataset.source == "dicom-folder":
        from .dicom_folder import DicomFolderSource
        return DicomFolderSource(Path(location), dataset, fields, hmac_key, consent, cache_dir)
    if dataset.source == "dicomweb":
        from .dicomweb import DicomWebSource
        return DicomWebSource(dataset.location, dataset, fields, hmac_key, consent)
    if dataset.source == "fhir-ndjson":
        from .fhir import FhirNdjsonSource
        return FhirNdjsonSource(Path(location), dataset, fields, hmac_key, consent)
    if dataset.source == "csv":
        from .csv_table import CsvSource
        return CsvSource(Path(location), dataset, fields, hmac_key, consent)
    raise BadInput(f"unknown dataset source {dataset.source!r}")
