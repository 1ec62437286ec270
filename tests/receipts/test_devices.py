"""The receipt's devices section: the GPUs granted (model, memory, driver) and the job's
GPU-seconds, written by the edge from the air-gap gate's evidence, checked and shown by
`rapha verify`; a CPU job's receipt has none and gets no line."""

from __future__ import annotations

import pytest

from edge_kernel.gates.pipeline import GateResult
from edge_kernel.release.receipts import build_predicate
from jupyter_rapha.protocol.devices import devices_problem, devices_section, wall_seconds
from jupyter_rapha.protocol.jobspec import Budget, JobSpec, OutputPolicy, code_digest
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.receipt import sha256_hex, sign_receipt, verify_receipt
from tests.receipts.receipt_factory import predicate
from tests.receipts.test_disclosure import DISCLOSURE

WEIGHTS = b"weights"
GPUS = {"driver_version": "550.54.15", "devices": [{"model": "NVIDIA H200", "memory_mib": None},
                                                   {"model": "NVIDIA H200", "memory_mib": None}]}
SECTION = {"driver_version": "550.54.15", "gpus": [{"model": "NVIDIA H200", "memory_mib": 143771}],
           "gpu_seconds": 120}


@pytest.fixture(scope="module")
def edge_key():
    return PrivateKey.generate()


def line(edge_key, devices):
    value = {**predicate(), "receipt_version": "1.4", "disclosure": DISCLOSURE}
    if devices is not None:
        value["devices"] = devices
    result = verify_receipt(sign_receipt(value, sha256_hex(WEIGHTS), edge_key), edge_key.public)
    return next(((c.status, c.detail) for c in result.checks if c.name == "devices"), None)


def test_the_devices_granted_are_shown(edge_key):
    assert line(edge_key, SECTION) == ("pass", "1 x NVIDIA H200 (143771 MiB), driver 550.54.15, 120 GPU-seconds")


def test_a_receipt_without_gpus_gets_no_line(edge_key):
    assert line(edge_key, None) is None


@pytest.mark.parametrize("bad", [
    {}, [], {**SECTION, "gpus": []}, {**SECTION, "gpus": [{"model": ""}]}, {**SECTION, "gpu_seconds": -1},
    {**SECTION, "gpu_seconds": True}, {**SECTION, "extra": 1}, {**SECTION, "driver_version": 550},
    {**SECTION, "gpus": [{"model": "x", "memory_mib": "lots"}]},
])
def test_a_malformed_section_fails(edge_key, bad):
    status, detail = line(edge_key, bad)
    assert status == "fail" and detail == devices_problem(bad) and detail


def test_gpu_seconds_are_wall_seconds_times_the_gpus_granted():
    section = devices_section(GPUS, "2026-01-01T10:00:00Z", "2026-01-01T10:01:40Z")
    assert section == {"driver_version": "550.54.15", "gpus": GPUS["devices"], "gpu_seconds": 200}
    assert devices_section({}, "2026-01-01T10:00:00Z", "2026-01-01T10:01:40Z") is None
    assert wall_seconds("garbled", "2026-01-01T10:00:00Z") == 0


def _predicate(gates):
    code = "rapha.save(model)"
    spec = JobSpec(job_id="a" * 32, researcher_key_id="k" * 16, created="2026-01-31T12:00:00Z", nonce="b" * 32,
                   code=code, code_sha256=code_digest(code), dataset="d", fields=("image",),
                   budget=Budget(10, 600), output_policy=OutputPolicy(1_000_000, ("loss",), 1000), params={})
    meter = type("Meter", (), {"records_used": 3, "records_root_hex": "0" * 64, "cohort_size": 10, "skipped": {}})()
    dataset = type("Dataset", (), {"name": "d", "version": "1", "price_per_record": "0"})()
    return build_predicate(spec=spec, request_sha256="0" * 64, edge={}, dataset=dataset, meter=meter,
                           weights=WEIGHTS, weights_tensors=1, metrics={}, gates=gates, unsafe=(),
                           times={"started": "2026-01-01T10:00:00Z", "finished": "2026-01-01T10:00:30Z"},
                           currency="GBP", run_times=("2026-01-01T10:00:05Z", "2026-01-01T10:00:25Z"))


def test_the_edge_writes_the_section_from_the_airgap_evidence():
    with_gpus = _predicate([GateResult("airgap", "pass", {"sealed": True, "gpus": GPUS})])
    assert with_gpus["devices"]["gpu_seconds"] == 40  # the job's 20 s x 2 GPUs
    assert with_gpus["budget"]["max_gpu_seconds"] == with_gpus["budget"]["max_seconds"] * 2
    without = _predicate([GateResult("airgap", "pass", {"sealed": True, "gpus": {"driver_version": "",
                                                                                   "devices": []}})])
    assert "devices" not in without and "max_gpu_seconds" not in without["budget"]
