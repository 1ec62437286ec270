"""Mutated DICOM bytes through what the broker runs on a record: parse, identity (the
pseudonym), the index-time checks and the decode on reload. Every damaged file is a
``Skip`` (a fixed reason, never header text) or the fault the caller asked for."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_kernel.data import dicom_record
from edge_kernel.data.source import Skip, granted_specs
from edge_kernel.data.synth import make_synthetic_dataset, synthetic_dataset_entry
from jupyter_rapha.protocol.errors import SandboxFault
from tests.fuzz.strategies import budget

KEY = b"fuzz pseudonym key, 32 bytes...."
MAX_BYTES = 1 << 20


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom") / "synth"
    make_synthetic_dataset(folder, 1, seed=3, size=8)
    dataset = synthetic_dataset_entry("fuzz-cxr", str(folder), size=8)
    specs = granted_specs(dataset, ["image", "finding"])
    data = next(Path(folder).glob("*.dcm")).read_bytes()
    return data, specs, dicom_record.check_specs(dataset, specs)


@st.composite
def mutations(draw, size: int) -> list[tuple[str, int, bytes]]:
    steps = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "length"]))
        at = draw(st.integers(0, size - 1))
        steps.append((kind, at, draw(st.binary(min_size=1, max_size=8))))
    return steps


def mutate(data: bytes, steps: list[tuple[str, int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, at, junk in steps:
        at = min(at, max(len(out) - 1, 0))
        if kind == "flip":
            out[at:at + len(junk)] = junk
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out[at:at] = junk
        else:  # an element length grown to 0xFFFFFFFF (undefined) or past the file
            out[at:at + 4] = b"\xff\xff\xff\xff"
    return bytes(out)


def broker_steps(data: bytes, specs, labels) -> None:
    ds = dicom_record.parse(data, max_bytes=MAX_BYTES)
    pseudonym, _, _ = dicom_record.guarded(dicom_record.identity, ds, KEY)
    dicom_record.guarded(dicom_record.check, ds, specs, labels)
    dicom_record.reload(data, max_bytes=MAX_BYTES, key=KEY, specs=specs, labels=labels, pseudonym=pseudonym,
                        fault=SandboxFault("record changed since it was indexed"))


@pytest.fixture(autouse=True)
def quiet():
    dicom_record.quiet_pydicom()  # pytest resets warning filters per test; pydicom's quote header values


def test_the_unmutated_record_passes_every_step(record):
    broker_steps(*record)


@budget(100)
@given(st.data())
def test_mutated_dicom_bytes_skip_or_fault_never_raise_otherwise(record, data):
    raw, specs, labels = record
    mutated = mutate(raw, data.draw(mutations(len(raw))))
    try:
        broker_steps(mutated, specs, labels)
    except Skip as skip:
        assert skip.reason in SKIP_REASONS, skip.reason
    except SandboxFault:
        pass


SKIP_REASONS = {"file too large", "not a DICOM file", "unreadable DICOM header", "missing patient id or instance uid",
                "invalid patient id or instance uid", "malformed DICOM element", "no pixel data",
                "not a greyscale image", "more than one frame", "image size differs from the schema",
                "unreadable pixel data", "label missing", "label invalid"}
