"""The dataset registry: what each dataset is, where it lives and what it may release.

Stored as ``datasets.json`` in the config dir. A dataset declares its source, its schema
(the fields that can cross into a job, with dtype and shape), its label mapping, its
price per record, its sensitivity and the largest budget it accepts.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jupyter_rapha.protocol.errors import BadInput, NotFound

REGISTRY_FILE = "datasets.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DTYPES = ("float32", "float64", "int64", "int32", "uint8", "bool")
SOURCES = ("dicom-folder", "dicomweb", "fhir-ndjson", "csv")


@dataclass(frozen=True)
class FieldSpec:
    dtype: str
    shape: tuple[int, ...]
    kind: str = "feature"  # "feature" (e.g. pixels) or "label"


@dataclass(frozen=True)
class Dataset:
    name: str
    version: str
    source: str  # one of SOURCES
    location: str  # folder, file or base URL; relative paths resolved against the config dir
    fields: dict[str, FieldSpec]
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)  # label name -> mapping
    price_per_record: str = "0"
    sensitivity: str = "special-category"
    max_records: int = 100_000
    description: str = ""
    # feature name -> mapping, for tabular sources (FHIR, CSV): where a feature's value lives
    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    # source settings: DICOMweb studies/series scope and timeouts, CSV id column, ...
    options: dict[str, Any] = field(default_factory=dict)
    # a file of opted-out patient ids (one per line), applied before any record is counted
    opt_out: str = ""

    def schema(self) -> dict[str, Any]:
        return {name: {"dtype": f.dtype, "shape": list(f.shape), "kind": f.kind} for name, f in self.fields.items()}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fields"] = self.schema()
        return data


def parse_dataset(data: Any) -> Dataset:
    if not isinstance(data, dict):
        raise BadInput("a dataset entry must be a JSON object")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadInput("dataset name must be letters, digits, '.', '_' or '-'")
    fields = data.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise BadInput(f"dataset {name}: 'fields' must declare at least one field")
    source = str(data.get("source", "dicom-folder") or "dicom-folder")
    if source not in SOURCES:
        raise BadInput(f"dataset {name}: source must be one of {', '.join(SOURCES)}")
    for key in ("labels", "features", "options"):
        if not isinstance(data.get(key, {}), dict):
            raise BadInput(f"dataset {name}: '{key}' must be a JSON object")
    return Dataset(
        name=name, version=str(data.get("version", "1")), source=source,
        location=str(data.get("location", "")),
        fields={k: _field(name, k, v) for k, v in fields.items()},
        labels=dict(data.get("labels", {})), price_per_record=str(data.get("price_per_record", "0")),
        sensitivity=str(data.get("sensitivity", "special-category")),
        max_records=int(data.get("max_records", 100_000)), description=str(data.get("description", "")),
        features=dict(data.get("features", {})), options=dict(data.get("options", {})),
        opt_out=str(data.get("opt_out", "") or ""),
    )


def _field(dataset: str, name: str, spec: Any) -> FieldSpec:
    if not isinstance(spec, dict) or spec.get("dtype") not in DTYPES:
        raise BadInput(f"dataset {dataset}: field {name} needs a dtype, one of {', '.join(DTYPES)}")
    shape = spec.get("shape", [])
    if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
        raise BadInput(f"dataset {dataset}: field {name} shape must be a list of positive integers")
    return FieldSpec(spec["dtype"], tuple(shape), str(spec.get("kind", "feature")))


class DatasetRegistry:
    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        self.path = config_dir / REGISTRY_FILE

    def all(self) -> dict[str, Dataset]:
        if not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text("utf-8"))
        except ValueError as exc:
            raise BadInput(f"{self.path} is not valid JSON") from exc
        return {d.name: d for d in (parse_dataset(entry) for entry in raw.get("datasets", []))}

    def get(self, name: str) -> Dataset:
        found = self.all().get(name)
        if found is None:
            raise NotFound(f"no dataset named {name!r} at this edge")
        return found

    def add(self, dataset: Dataset) -> None:
        current = self.all()
        current[dataset.name] = dataset
        doc = {"datasets": [d.to_dict() for d in current.values()]}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n", "utf-8")
        tmp.replace(self.path)  # atomic: a crash never leaves half a registry

    def resolve(self, dataset: Dataset) -> Path:
        location = Path(dataset.location)
        return location if location.is_absolute() else self.config_dir / location

    def resolve_opt_out(self, dataset: Dataset) -> Path | None:
        if not dataset.opt_out:
            return None
        path = Path(dataset.opt_out)
        return path if path.is_absolute() else self.config_dir / path
