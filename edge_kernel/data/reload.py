"""Records read again after a job, as the job saw them, for the disclosure checks.

The checks that run before a release (copies of records in the weights, membership
inference on held-back records) must look at exactly what the job could have learnt:
the granted fields, after the dataset's declared preprocessing, in the dtype and shape
the job received. So the records are read again through the same source code the broker
used for the job (``open_source`` with the job's granted fields), and pass the broker's
own schema check (``granted_columns``). Nothing here runs researcher code.

A record the job used that can no longer be read, or that reads differently (its
pseudonym, bound to the file's identifiers, no longer matches), is a fault: a check that
cannot see what was used must refuse the release, never pass it (S4).

Consent is not applied again: a patient who opted out after the job was still in it, and
the check is what protects them. Only trusted edge code calls this, and the records never
leave the edge.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np

from jupyter_rapha.protocol.errors import BadInput, StorageFault
from jupyter_rapha.protocol.jobspec import JobSpec

from ..settings import Settings
from .broker import granted_columns, schema_layout
from .registry import Dataset, DatasetRegistry
from .source import RecordRef, Source, SourceFault
from .sources import open_source

PSEUDONYM_KEY_FILE = "pseudonym.key"
MIN_KEY_BYTES = 32


def reload_records(dataset: Dataset, pseudonyms: Sequence[bytes], spec: JobSpec,
                   settings: Settings, *, reading: str = "") -> list[dict[str, np.ndarray]]:
    """The records named by ``pseudonyms`` (in that order), each a dict of the job's
    granted fields as numpy arrays (labels as 0-d arrays), as the job's batches held them.

    ``reading``: the job's ``reading_digest``, kept in its provenance; when given, a
    dataset whose definition changed since (other transforms, label tags, source) is a
    fault: its records would not be the ones the job saw."""
    if spec.dataset != dataset.name:
        raise BadInput("the job ran on another dataset than the one given to reload from")
    if reading and reading != reading_digest(dataset, spec.fields):
        raise SourceFault("the dataset's definition changed since the job ran",
                          hint="its records read now are not the job's; the release cannot be checked")
    source = open_source(dataset, DatasetRegistry(settings.config_dir).resolve(dataset), list(spec.fields),
                         read_pseudonym_key(settings.keys_dir))
    return reload_from(source, pseudonyms)


def reload_from(source: Source, pseudonyms: Sequence[bytes]) -> list[dict[str, np.ndarray]]:
    """``reload_records`` on an open source (the same one a broker would serve from)."""
    refs = _refs(source, pseudonyms)
    layout = schema_layout(source.specs)
    records = [source.load(ref) for ref in refs]
    columns = granted_columns(layout, records)
    return [{name: np.asarray(columns[name][i]) for name in layout} for i in range(len(records))]


def reading_digest(dataset: Dataset, fields: Sequence[str]) -> str:
    """SHA-256 over what decides how the granted fields of a record are read: the source,
    its location and options, each granted field's dtype, shape, kind and transforms, and
    the label and feature mappings behind them. Not the price, budget or description."""
    granted = sorted(fields)
    schema = dataset.schema()
    reading: dict[str, Any] = {
        "source": dataset.source, "location": dataset.location, "options": dataset.options,
        "fields": {name: schema.get(name) for name in granted},
        "labels": {name: dataset.labels.get(name) for name in granted},
        "features": {name: dataset.features.get(name) for name in granted}}
    return hashlib.sha256(json.dumps(reading, sort_keys=True, default=str).encode()).hexdigest()


def read_pseudonym_key(keys_dir: Path) -> bytes:
    path = keys_dir / PSEUDONYM_KEY_FILE
    try:
        key = bytes.fromhex(path.read_text("ascii").strip())
    except (OSError, ValueError) as exc:
        raise StorageFault("the edge's pseudonym key cannot be read", hint="run 'rapha-edge init'") from exc
    if len(key) < MIN_KEY_BYTES:
        raise StorageFault("the edge's pseudonym key is shorter than 32 bytes")
    return key


def _refs(source: Source, pseudonyms: Sequence[bytes]) -> list[RecordRef]:
    index = source.index()
    by_pseudonym = {ref.pseudonym: ref for ref in index.records}
    missing = sum(1 for p in pseudonyms if p not in by_pseudonym)
    if missing:
        # a count only: a pseudonym in a message is a handle on a patient
        raise SourceFault(f"{missing} of the job's records can no longer be read from the dataset",
                           hint="the dataset changed since the job ran; its release cannot be checked")
    return [by_pseudonym[p] for p in pseudonyms]
