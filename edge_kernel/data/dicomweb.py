"""A dataset source over a PACS's DICOMweb API: QIDO-RS to list, WADO-RS to fetch.

Only the broker talks to the PACS; the job stays air-gapped and gets records the same
way as from a folder. Every query is scoped to the studies or series the dataset
declares (``options.studies``, ``options.series``), and every instance a PACS answers
with is checked against that scope again, so a PACS that ignores a filter cannot widen
the cohort. Headers come from WADO-RS metadata at index time (no pixels moved); pixels
are fetched with WADO-RS when a record is first handed to the job, then cached.

A dataset with ``"options": {"records": "series"}`` has one record per series
(``series.py``, ``volume.py``): the series' metadata is checked as a volume at index time,
and its instances are fetched together, in one WADO-RS series request, when it is handed
over.

Every failure of the PACS (refused connection, timeout, HTTP error, malformed answer)
is wrapped once into ``SourceFault`` with a generic message: URLs carry UIDs, and a
UID must not reach an error a researcher sees.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any
from collections.abc import Iterable

import numpy as np
import pydicom

from . import dicom_record
from . import series as series_record
from .consent import OptOutList
from .registry import Dataset
from .source import Index, RecordCache, RecordRef, Skip, SourceFault, granted_specs, sorted_index

MAX_INSTANCE_BYTES = 512 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_PAGE_SIZE = 500
MAX_PAGES = 10_000
_STUDY, _SERIES, _INSTANCE, _PATIENT = "0020000D", "0020000E", "00080018", "00100020"
_DICOM_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_DICOM_NATIVE = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'


class DicomWebSource:
    def __init__(self, base_url: str, dataset: Dataset, fields: Iterable[str], hmac_key: bytes,
                 consent: OptOutList | None = None) -> None:
        import requests

        self.base = base_url.rstrip("/")
        if not self.base.startswith(("http://", "https://")):
            raise SourceFault("a DICOMweb dataset needs an http(s) base URL")
        self.specs = granted_specs(dataset, fields)
        self.labels = dicom_record.check_specs(dataset, self.specs)
        self.hmac_key, self.consent = hmac_key, consent or OptOutList.none()
        self.scope = _scope(dataset.options)
        self.timeout = float(dataset.options.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS))
        self.page_size = dataset.options.get("qido_page_size", DEFAULT_PAGE_SIZE)
        if not isinstance(self.page_size, int) or isinstance(self.page_size, bool) or not 1 <= self.page_size <= 10_000:
            raise SourceFault("options.qido_page_size must be a number of results, 1 to 10000")
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy from the environment: the PACS is inside
        if dataset.options.get("username"):
            password = Path(str(dataset.options.get("password_file", ""))).read_text("utf-8").strip() \
                if dataset.options.get("password_file") else ""
            self.session.auth = (str(dataset.options["username"]), password)
        self.cache = RecordCache()
        self.series_records = dataset.series_records

    def index(self, limit: int | None = None) -> Index:
        by_pseudonym: dict[bytes, RecordRef] = {}
        skipped: Counter[str] = Counter()
        excluded: list[RecordRef] = []
        if self.series_records:
            for study, series_uid in self._series_in_scope()[:limit]:
                self._add_series(study, series_uid, by_pseudonym, skipped, excluded)
            return sorted_index(by_pseudonym, skipped, excluded)
        seen = 0
        for study, series in self._series_in_scope():
            for item in self._get_json(f"/studies/{study}/series/{series}/metadata"):
                if limit is not None and seen >= limit:
                    return sorted_index(by_pseudonym, skipped, excluded)
                seen += 1
                self._add(item, study, series, by_pseudonym, skipped, excluded)
        return sorted_index(by_pseudonym, skipped, excluded)

    def load(self, ref: RecordRef) -> dict[str, np.ndarray]:
        cached = self.cache.get(ref.pseudonym)
        if cached is not None:
            return cached
        if self.series_records:
            arrays = self._load_series(ref)
            self.cache.put(ref.pseudonym, arrays)
            return arrays
        study, series, instance = ref.location.split("/")
        body = self._get_instance(f"/studies/{study}/series/{series}/instances/{instance}")
        arrays = dicom_record.reload(body, max_bytes=MAX_INSTANCE_BYTES, key=self.hmac_key, specs=self.specs,
                                     labels=self.labels, pseudonym=ref.pseudonym,
                                     fault=SourceFault("a record changed or vanished in the PACS during the job"))
        self.cache.put(ref.pseudonym, arrays)
        return arrays

    # ---- scope --------------------------------------------------------------------
    def _series_in_scope(self) -> list[tuple[str, str]]:
        pairs = list(self.scope["series"])
        for study in self.scope["studies"]:  # QIDO-RS: the series of a declared study
            for item in self._query(f"/studies/{study}/series"):
                if _value(item, _STUDY) in (None, study) and _value(item, _SERIES):
                    pairs.append((study, str(_value(item, _SERIES))))
        return sorted(set(pairs))

    def _query(self, path: str) -> list[Any]:
        """A QIDO-RS query, page by page (``limit``/``offset``): a PACS that caps its
        answers would otherwise leave part of a declared study out of the cohort unseen.
        A PACS that ignores ``limit`` answers everything at once; one that ignores
        ``offset`` repeats itself, and the query ends at the first page with nothing new."""
        results: list[Any] = []
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            page = self._get_json(f"{path}?limit={self.page_size}&offset={len(results)}")
            fresh = [item for item in page if _canonical(item) not in seen]
            seen.update(_canonical(item) for item in fresh)
            results += fresh
            if len(page) != self.page_size or not fresh:
                return results
        raise SourceFault("the PACS kept answering a query past the page limit")

    def _add(self, item: Any, study: str, series: str, by_pseudonym: dict[bytes, RecordRef],
             skipped: Counter[str], excluded: list[RecordRef]) -> None:
        if _value(item, _STUDY) != study or _value(item, _SERIES) != series:
            skipped["outside the declared scope"] += 1  # a PACS that ignored the filter
            return
        instance = str(_value(item, _INSTANCE))
        try:
            ds = dicom_record.guarded(pydicom.Dataset.from_json, item, _no_bulk)
            pseudonym, patient, patient_id = dicom_record.guarded(dicom_record.identity, ds, self.hmac_key)
            dicom_record.guarded(_check_header, ds, self.specs, self.labels)
            if dicom_record.needs_pixels(ds, self.specs) and not self.consent.excludes(patient_id):
                # Metadata without the pixel data (compressed, as some PACS store it): the
                # instance is fetched and decoded once now, as a folder's compressed files
                # are, so a record that cannot be decoded is skipped here, not mid-job.
                self._check_instance(f"/studies/{study}/series/{series}/instances/{instance}", pseudonym)
        except Skip as skip:
            skipped[skip.reason] += 1
            return
        if self.consent.excludes(patient_id):
            excluded.append(RecordRef(pseudonym, patient))  # never counted, never sent
        elif pseudonym in by_pseudonym:
            skipped["duplicate instance"] += 1
        else:
            by_pseudonym[pseudonym] = RecordRef(pseudonym, patient, f"{study}/{series}/{instance}")

    # ---- series as records ------------------------------------------------------------
    def _add_series(self, study: str, series_uid: str, by_pseudonym: dict[bytes, RecordRef],
                    skipped: Counter[str], excluded: list[RecordRef]) -> None:
        """One declared series: its instances grouped by patient (a series belongs to one,
        but a PACS is not trusted to say so), each group checked as a volume."""
        groups: dict[series_record.SeriesKey, list[pydicom.Dataset]] = {}
        for item in self._get_json(f"/studies/{study}/series/{series_uid}/metadata"):
            if _value(item, _STUDY) != study or _value(item, _SERIES) != series_uid:
                skipped["outside the declared scope"] += 1
                continue
            try:
                ds = dicom_record.guarded(pydicom.Dataset.from_json, item, _no_bulk)
                key = dicom_record.guarded(series_record.key_of, ds)
                series_record.check_object(ds, self.specs, self.labels, pixels_present=False)
            except Skip as skip:
                skipped[skip.reason] += 1
                continue
            groups.setdefault(key, []).append(ds)
        for key in sorted(groups):
            try:
                pseudonym, patient = series_record.pseudonyms(key, self.hmac_key)
                if self.consent.excludes(key[0]):
                    excluded.append(RecordRef(pseudonym, patient))  # never checked, counted or sent
                    continue
                series_record.check(groups[key], self.specs, self.labels)
                if any(dicom_record.needs_pixels(ds, self.specs) for ds in groups[key]):
                    # metadata without the pixel data: the series is fetched and decoded once now
                    self._series_objects(study, series_uid, pseudonym, series_record.members_digest(groups[key]))
            except Skip as skip:
                skipped[skip.reason] += 1
                continue
            by_pseudonym[pseudonym] = RecordRef(pseudonym, patient,
                                                f"{study}/{series_uid}/{series_record.members_digest(groups[key])}")

    def _load_series(self, ref: RecordRef) -> dict[str, np.ndarray]:
        study, series_uid, digest = ref.location.split("/")
        try:
            return self._series_objects(study, series_uid, ref.pseudonym, digest)
        except Skip as skip:
            raise SourceFault("a record changed or vanished in the PACS during the job") from skip

    def _series_objects(self, study: str, series_uid: str, pseudonym: bytes, digest: str) -> dict[str, np.ndarray]:
        """The series in one WADO-RS request, read as a record; raises ``Skip``."""
        parts = self._get_parts(f"/studies/{study}/series/{series_uid}")
        objects = [dicom_record.parse(part, max_bytes=MAX_INSTANCE_BYTES) for part in parts]
        mine = [ds for ds in objects if self._series_pseudonym(ds) == pseudonym]  # this patient's instances
        return series_record.read(mine, self.specs, self.labels, hmac_key=self.hmac_key, pseudonym=pseudonym,
                                  digest=digest)

    def _series_pseudonym(self, ds: pydicom.Dataset) -> bytes:
        key = dicom_record.guarded(series_record.key_of, ds)
        return series_record.pseudonyms(key, self.hmac_key)[0]

    def _check_instance(self, path: str, pseudonym: bytes) -> None:
        ds = dicom_record.parse(self._get_instance(path), max_bytes=MAX_INSTANCE_BYTES)
        found, _, _ = dicom_record.guarded(dicom_record.identity, ds, self.hmac_key)
        if found != pseudonym:
            raise Skip("metadata and instance disagree")
        dicom_record.guarded(dicom_record.check, ds, self.specs, self.labels)

    # ---- HTTP, every failure wrapped once -----------------------------------------
    def _get_json(self, path: str) -> list[Any]:
        response = self._get(path, "application/dicom+json")
        if response.status_code == 204 or not response.content:
            return []
        try:
            doc = response.json()
        except ValueError as exc:
            raise SourceFault("the PACS answered with malformed JSON") from exc
        if not isinstance(doc, list):
            raise SourceFault("the PACS answered with malformed JSON")
        return doc

    def _get_instance(self, path: str) -> bytes:
        return self._get_parts(path)[0]

    def _get_parts(self, path: str) -> list[bytes]:
        """The instances a WADO-RS retrieve answers (one for an instance, all of a series).
        Uncompressed first: a PACS that can transcode does, and the edge needs no codec
        for what it stores compressed; one that cannot (406) sends them as stored."""
        response = self._get(path, _DICOM_NATIVE, not_acceptable_ok=True)
        if response.status_code in (400, 406):
            response = self._get(path, _DICOM_AS_STORED)
        return _parts(response.headers.get("Content-Type", ""), response.content)

    def _get(self, path: str, accept: str, *, not_acceptable_ok: bool = False) -> Any:
        import requests

        try:
            response = self.session.get(self.base + path, headers={"Accept": accept}, timeout=self.timeout,
                                        allow_redirects=False)
        except requests.RequestException as exc:
            raise SourceFault("the PACS could not be reached", hint="check the dataset's DICOMweb URL") from exc
        if response.status_code == 404:
            return _Empty()
        if not_acceptable_ok and response.status_code in (400, 406):
            return response
        if response.status_code not in (200, 204):
            raise SourceFault(f"the PACS refused a request (HTTP {response.status_code})")
        return response


class _Empty:
    status_code, content = 204, b""
    headers: dict[str, str] = {}


def _check_header(ds: pydicom.Dataset, specs: Any, labels: Any) -> None:
    dicom_record.check(ds, specs, labels, pixels_present=False)


def _no_bulk(*_: Any) -> bytes:
    return b""  # metadata only: pixels are fetched when a record is handed over


def _scope(options: dict[str, Any]) -> dict[str, list[Any]]:
    studies = options.get("studies", [])
    series = options.get("series", [])
    if not isinstance(studies, list) or not all(isinstance(s, str) and _uid(s) for s in studies):
        raise SourceFault("options.studies must list StudyInstanceUIDs")
    if not isinstance(series, list) or not all(
            isinstance(s, dict) and _uid(s.get("study")) and _uid(s.get("series")) for s in series):
        raise SourceFault("options.series must list {study, series} UIDs")
    if not studies and not series:
        # An empty scope would mean "the whole PACS": refused, a dataset is declared.
        raise SourceFault("a DICOMweb dataset must declare the studies or series it covers")
    return {"studies": list(studies), "series": [(s["study"], s["series"]) for s in series]}


def _uid(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and all(c.isdigit() or c == "." for c in value)


def _canonical(item: Any) -> str:
    import json

    return json.dumps(item, sort_keys=True, default=str)


def _value(item: Any, tag: str) -> Any:
    try:
        return item[tag]["Value"][0]
    except (KeyError, IndexError, TypeError):
        return None


def _parts(content_type: str, body: bytes) -> list[bytes]:
    """The parts of a multipart/related answer, at least one."""
    boundary = None
    for param in content_type.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if not boundary:
        raise SourceFault("the PACS answered without a multipart boundary")
    delimiter = b"--" + boundary.encode("ascii", "replace")
    pieces = body.split(delimiter)
    if len(pieces) < 3:
        raise SourceFault("the PACS answered with a malformed multipart body")
    parts = []
    for piece in pieces[1:-1]:  # before the first delimiter: preamble; after the last: "--"
        head, sep, payload = piece.partition(b"\r\n\r\n")
        if not sep:
            raise SourceFault("the PACS answered with a malformed multipart body")
        parts.append(payload[:-2] if payload.endswith(b"\r\n") else payload)
    return parts
