"""Fixtures and helpers for the data, broker and runner tests: a synthetic DICOM folder
with fake identifiers, the header values a leak would show, and job specs."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pydicom
import pytest

from edge_kernel.data.registry import Dataset
from edge_kernel.data.synth import SYNTH_IDENTIFIER_TAGS, make_synthetic_dataset, synthetic_dataset_entry
from edge_kernel.settings import Settings
from jupyter_rapha.protocol.jobspec import Budget, JobSpec, code_digest

HMAC_KEY = b"test pseudonym key, 32 bytes...."
SYNTH_RECORDS = 64


@pytest.fixture(scope="module")
def synth_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("synth") / "dicom"
    make_synthetic_dataset(folder, SYNTH_RECORDS, seed=7)
    return folder


@pytest.fixture(scope="module")
def synth_entry(synth_folder: Path) -> Dataset:
    return synthetic_dataset_entry("synth-cxr", str(synth_folder))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(config_dir=tmp_path, edge_id="test-edge")


def header_values(folder: Path) -> set[str]:
    """Every identifying header value (and its name parts) written into the folder."""
    values: set[str] = set()
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        for keyword in SYNTH_IDENTIFIER_TAGS:
            value = str(ds.get(keyword, "") or "")
            values.add(value)
            values.update(part for part in value.replace("^", " ").replace(",", " ").split() if len(part) >= 4)
    return {v for v in values if len(v) >= 4}


def leaked(blob: bytes, values: set[str], *, text: bool = False) -> list[str]:
    """Header values found in ``blob``. In text (JSON of numbers) bare digit strings such
    as dates are skipped: they occur by chance inside printed floats."""
    found = []
    for value in values:
        if text and value.isdigit():
            continue
        if value.encode("utf-8") in blob:
            found.append(value)
    return found


def make_spec(code: str, *, fields: tuple[str, ...] = ("image", "finding"), max_records: int = SYNTH_RECORDS,
              max_seconds: int = 60, params: dict | None = None) -> JobSpec:
    return JobSpec(
        job_id=secrets.token_hex(16), researcher_key_id=secrets.token_hex(16), created="2026-01-01T00:00:00Z",
        nonce=secrets.token_hex(16), code=code, code_sha256=code_digest(code), dataset="synth-cxr",
        fields=fields, budget=Budget(max_records=max_records, max_seconds=max_seconds), params=params or {})


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
