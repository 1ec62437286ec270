"""The Releaser, the one way out (S5): the release check refuses what may not leave, the
predicate comes from the edge's own records, the written release carries a pending anchor
and removes the held copy, and after a crash only a release whose files are what its
receipt signs is taken up again."""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace

import pytest

from edge_kernel.data.broker import MeterSummary
from edge_kernel.gates.pipeline import GateResult
from edge_kernel.release.files import Release
from edge_kernel.release.held import Held, held_dir, write_held
from edge_kernel.release.releaser import Releaser, job_release_dir
from jupyter_rapha.protocol.anchor_proof import is_pending
from jupyter_rapha.protocol.errors import ReleaseDenied
from jupyter_rapha.protocol.jobspec import parse_jobspec
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.receipt import sha256_hex, verify_receipt
from tests.protocol.test_jobspec import spec_dict
from tests.release.test_held_walk import FIGURES

KEY = PrivateKey.generate()
SPEC = parse_jobspec(spec_dict())
JOB = SimpleNamespace(job_id=SPEC.job_id, request_sha256="d" * 64, submitted="2026-12-03T06:00:00Z")
METER = MeterSummary(records_used=7, records_root_hex="ab" * 32, pseudonyms_hex=(), skipped={"unreadable": 1},
                     cohort_size=40)
# What the walk adds once the checks and the decision let the outputs go (receipt 1.3).
DISCLOSURE = {"checks": FIGURES, "holdback_size": 50, "decision": "release", "rule": "checks_under_thresholds",
              "mode": "auto", "reviews": []}
TIMES = {"submitted": JOB.submitted, "started": "2026-12-03T06:00:01Z", "finished": "2026-12-03T06:00:09Z"}


def weights() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return struct.pack("<Q", len(header)) + header + struct.pack("<2f", 0.5, -0.25)


class FakeDatasets:
    def get(self, name):
        return SimpleNamespace(name=name, version="3", price_per_record="0.5", source="dicom-folder",
                               location="unused", options={}, labels={}, features={}, schema=lambda: {})


def releaser(tmp_path) -> Releaser:
    identity = {"id": "edge-a", "key_id": KEY.key_id, "anchor_address": "0x" + "00" * 20, "chain_id": 1337}
    return Releaser(jobs_dir=tmp_path, datasets=FakeDatasets(), key=KEY, identity=lambda: identity,
                    unsafe=("unsafe_no_airgap",), currency="GBP")


def run(weights_bytes=None, metrics=None):
    return SimpleNamespace(weights=weights() if weights_bytes is None else weights_bytes,
                           metrics={"loss": [0.9, 0.4]} if metrics is None else metrics, meter=METER,
                           started=TIMES["started"], finished=TIMES["finished"])  # as RunOutcome has them


@pytest.mark.parametrize("outcome", [run(weights_bytes=b""), run(weights_bytes=b"not safetensors"),
                                     run(metrics={"undeclared": [1.0]}), run(metrics={"loss": [float("nan")]})])
def test_outputs_that_may_not_leave_are_refused(tmp_path, outcome):
    with pytest.raises(ReleaseDenied):
        releaser(tmp_path).check(SPEC, outcome)


def test_the_predicate_comes_from_the_edge_records(tmp_path):
    edge = releaser(tmp_path)
    checked = edge.check(SPEC, run())
    assert checked.gate == GateResult("release", "pass", {"weights_bytes": len(weights()), "tensors": 1,
                                                          "metric_names": ["loss"]})
    predicate = edge.predicate(JOB, SPEC, [checked.gate], run(), checked, TIMES)
    assert predicate["dataset"]["records_used"] == 7 and predicate["dataset"]["cohort_size"] == 40
    assert predicate["settlement"] == {"price_per_record": "0.5", "currency": "GBP", "records": 7, "amount": "3.5"}
    assert predicate["outputs"]["weights"] == {"sha256": sha256_hex(weights()), "bytes": len(weights()), "tensors": 1}
    assert predicate["job"]["request_sha256"] == JOB.request_sha256 and predicate["edge"]["id"] == "edge-a"
    assert predicate["unsafe"] == ["unsafe_no_airgap"] and predicate["times"] == TIMES


def test_a_written_release_is_pending_its_anchor_and_the_held_copy_is_gone(tmp_path):
    edge = releaser(tmp_path)
    checked = edge.check(SPEC, run())
    predicate = edge.predicate(JOB, SPEC, [checked.gate], run(), checked, TIMES)
    held = Held(checked.weights_bytes, checked.metrics, predicate)
    write_held(held_dir(tmp_path, JOB.job_id), held)
    document = edge.sign(dict(held.predicate, disclosure=DISCLOSURE), held.weights)
    release = edge.write(JOB.job_id, held, document)
    assert is_pending(release.receipt["anchor"]) and document.get("anchor") is None  # signed, not yet anchored
    assert not held_dir(tmp_path, JOB.job_id).exists()
    assert edge.written(JOB.job_id) == release
    assert edge.release_dir(JOB.job_id) == job_release_dir(tmp_path, JOB.job_id) == tmp_path / JOB.job_id / "release"
    assert verify_receipt(release.receipt, KEY.public, weights=release.weights, metrics=release.metrics).statement
    anchored = dict(release.receipt, anchor={"method": "evm-tx", "envelope_sha256": "x"})
    edge.write_anchored(JOB.job_id, anchored)
    assert edge.written(JOB.job_id).receipt == anchored


def test_after_a_crash_only_a_release_that_matches_its_receipt_is_taken_up(tmp_path):
    edge = releaser(tmp_path)
    assert edge.written("f" * 32) is None
    checked = edge.check(SPEC, run())
    predicate = dict(edge.predicate(JOB, SPEC, [checked.gate], run(), checked, TIMES), disclosure=DISCLOSURE)
    release = edge.write(JOB.job_id, Held(checked.weights_bytes, checked.metrics, predicate),
                         edge.sign(predicate, checked.weights_bytes))
    assert edge.matching_receipt(release) == predicate
    other = bytearray(release.weights)
    other[-1] ^= 0x01
    assert edge.matching_receipt(Release(bytes(other), release.metrics, release.receipt)) is None
    assert edge.matching_receipt(Release(release.weights, {"loss": [0.1]}, release.receipt)) is None
    by_another_edge = releaser(tmp_path)
    by_another_edge.key = PrivateKey.generate()
    assert by_another_edge.matching_receipt(release) is None
