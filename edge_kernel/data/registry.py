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

from ..config_files import config_fault, write_json_atomically
from ..parsed_file import ParsedFile
from . import transforms as pixel_transforms
from .transforms import Transform

REGISTRY_FILE = "datasets.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DTYPES = ("float32", "float64", "int64", "int32", "uint8", "bool")
SOURCES = ("dicom-folder", "dicomweb", "fhir-ndjson", "csv")
_PRICE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,12})?")


@dataclass(frozen=True)
class FieldSpec:
    dtype: str
    shape: tuple[int, ...]
    kind: str = "feature"  # "feature" (e.g. pixels) or "label"
    # declared preprocessing (transforms.py), run by the broker; () keeps the default scaling
    transforms: tuple[Transform, ...] = ()


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

    @property
    def series_records(self) -> bool:
        """One record per series (a volume) instead of one per instance."""
        return self.options.get("records") == "series"

    def schema(self) -> dict[str, Any]:
        return {name: _field_schema(f) for name, f in self.fields.items()}

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
    max_records = data.get("max_records", 100_000)
    if not isinstance(max_records, int) or isinstance(max_records, bool) or max_records < 1:
        raise BadInput(f"dataset {name}: max_records must be a whole number of records, at least 1")
    parsed = {k: _field(name, k, v, source) for k, v in fields.items()}
    pixel_transforms.check_records(dict(data.get("options", {})).get("records"), parsed, source=source,
                                   where=f"dataset {name}")
    return Dataset(
        name=name, version=str(data.get("version", "1")), source=source,
        location=str(data.get("location", "")),
        fields=parsed,
        labels=dict(data.get("labels", {})), price_per_record=parse_price(data.get("price_per_record", "0"), name),
        sensitivity=str(data.get("sensitivity", "special-category")),
        max_records=max_records, description=str(data.get("description", "")),
        features=dict(data.get("features", {})), options=dict(data.get("options", {})),
        opt_out=str(data.get("opt_out", "") or ""),
    )


def parse_price(value: Any, dataset: str) -> str:
    """A price per record: a plain, non-negative decimal, kept as its text so the meter's
    arithmetic stays exact ("abc", "-1", "NaN" or "1e400" never reach a receipt)."""
    text = str(value).strip()
    if isinstance(value, bool) or not _PRICE.fullmatch(text):
        raise BadInput(f"dataset {dataset}: the price per record must be a decimal of 0 or more, such as 0.05,"
                       f" not {text!r}")
    return text


def _field(dataset: str, name: str, spec: Any, source: str = "dicom-folder") -> FieldSpec:
    if not isinstance(spec, dict) or spec.get("dtype") not in DTYPES:
        raise BadInput(f"dataset {dataset}: field {name} needs a dtype, one of {', '.join(DTYPES)}")
    shape = spec.get("shape", [])
    if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
        raise BadInput(f"dataset {dataset}: field {name} shape must be a list of positive integers")
    kind, where = str(spec.get("kind", "feature")), f"dataset {dataset}: field {name}"
    steps = pixel_transforms.parse_transforms(spec["transforms"], where) if "transforms" in spec else ()
    pixel_transforms.check_field(steps, source=source, kind=kind, dtype=spec["dtype"], shape=tuple(shape), where=where)
    return FieldSpec(spec["dtype"], tuple(shape), kind, steps)


def _field_schema(spec: FieldSpec) -> dict[str, Any]:
    """A field as the registry stores it and the catalog shows it; ``transforms`` only
    when declared, so a default field reads exactly as before."""
    entry: dict[str, Any] = {"dtype": spec.dtype, "shape": list(spec.shape), "kind": spec.kind}
    if spec.transforms:
        entry["transforms"] = pixel_transforms.canonical(spec.transforms)
    return entry


class DatasetRegistry:
    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        self.path = config_dir / REGISTRY_FILE
        self._file = ParsedFile(self.path, self._load)  # loaded again whenever the file changes

    def all(self) -> dict[str, Dataset]:
        """Every dataset; a broken file is a configuration fault (the request that meets
        it gets a generic 500, the cause goes to the edge log)."""
        return dict(self._file.get())

    def _load(self) -> dict[str, Dataset]:
        if not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text("utf-8"))
            entries = raw["datasets"] if isinstance(raw, dict) else None
        except (OSError, ValueError, KeyError) as exc:
            raise config_fault(self.path, "not a JSON object with a 'datasets' list") from exc
        if not isinstance(entries, list):
            raise config_fault(self.path, "'datasets' must be a list")
        try:
            return {d.name: d for d in (parse_dataset(entry) for entry in entries)}
        except BadInput as exc:
            raise config_fault(self.path, exc.diagnostics()) from exc

    def get(self, name: str) -> Dataset:
        found = self.all().get(name)
        if found is None:
            raise NotFound(f"no dataset named {name!r} at this edge")
        return found

    def add(self, dataset: Dataset, *, replace: bool = False) -> bool:
        """Register ``dataset``; True when it replaced one of the same name (``replace`` only)."""
        current = self.all()
        replaced = dataset.name in current
        if replaced and not replace:
            raise BadInput(f"a dataset named {dataset.name!r} is already registered",
                           hint="add --replace to replace it, or 'rapha-edge datasets remove NAME' first")
        current[dataset.name] = dataset
        self._write(current)
        return replaced

    def remove(self, name: str) -> Dataset:
        current = self.all()
        if name not in current:
            raise NotFound(f"no dataset named {name!r} is registered (registered: {', '.join(current) or 'none'})")
        removed = current.pop(name)
        self._write(current)
        return removed

    def _write(self, datasets: dict[str, Dataset]) -> None:
        write_json_atomically(self.path, {"datasets": [d.to_dict() for d in datasets.values()]})

    def resolve(self, dataset: Dataset) -> Path:
        location = Path(dataset.location)
        return location if location.is_absolute() else self.config_dir / location

    def resolve_opt_out(self, dataset: Dataset) -> Path | None:
        if not dataset.opt_out:
            return None
        path = Path(dataset.opt_out)
        return path if path.is_absolute() else self.config_dir / path
