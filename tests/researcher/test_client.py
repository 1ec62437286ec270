"""EdgeClient against the fake edge: signing, error mapping, the job lifecycle."""

from __future__ import annotations

import socket

import pytest

from jupyter_rapha.client import EdgeClient, JobFailed, final_error, make_jobspec
from jupyter_rapha.protocol import errors
from jupyter_rapha.protocol.jobspec import parse_jobspec
from jupyter_rapha.protocol.keys import PrivateKey
from tests.researcher.fake_edge import FakeEdge

GOOD = """
import torch
model = torch.nn.Linear(1024, 2)
for epoch in range(rapha.epochs):
    for batch in rapha.loader(batch_size=16):
        loss = torch.nn.functional.cross_entropy(model(batch["image"].flatten(1)), batch["finding"])
    rapha.log(loss=loss)
rapha.save(model)
"""


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture(scope="module")
def edge(key):
    with FakeEdge([key.public]) as running:
        yield running


def spec_for(key: PrivateKey, code: str = GOOD, dataset: str = "synthetic-cxr", budget: int = 20):
    return make_jobspec(code, dataset, ["image", "finding"], budget, 60, {"epochs": 1}, key.key_id)


def test_make_jobspec_is_fresh_and_parses(key):
    first, second = spec_for(key), spec_for(key)
    assert first.job_id != second.job_id and first.nonce != second.nonce
    assert parse_jobspec(first.to_dict()) == first
    assert first.created.endswith("Z") and len(first.created) == 20


def test_edge_info_and_catalog(edge, key):
    client = EdgeClient(edge.url, key)
    assert client.edge_info()["public_key"] == edge.key.public.to_text()
    assert client.dataset("synthetic-cxr")["schema"]["image"]["shape"] == [1, 32, 32]
    with pytest.raises(errors.NotFound):
        client.dataset("no-such-data")


def test_job_completes_and_outputs_come_back(edge, key):
    client = EdgeClient(edge.url, key)
    job_id = client.submit(spec_for(key))
    seen: list[str] = []
    status = client.wait(job_id, poll=0.05, timeout=60, on_status=lambda s: seen.append(s["state"]))
    assert status["state"] == "completed" and seen[-1] == "completed"
    assert final_error(status) is None
    assert client.weights(job_id)[:8] and "loss" in client.metrics(job_id)
    assert client.receipt(job_id)["format"] == "rapha-receipt/v1"
    assert job_id in [j["job_id"] for j in client.jobs()]


def test_unregistered_key_is_an_auth_error(edge):
    with pytest.raises(errors.AuthError):
        EdgeClient(edge.url, PrivateKey.generate()).datasets()


def test_another_researchers_job_is_not_found(edge, key):
    other = PrivateKey.generate()
    edge.researchers[other.key_id] = other.public
    job_id = EdgeClient(edge.url, key).submit(spec_for(key))
    with pytest.raises(errors.NotFound):
        EdgeClient(edge.url, other).status(job_id)


def test_refusals_map_to_gate_denied_with_reasons(edge, key):
    with pytest.raises(errors.SpecDenied) as caught:
        EdgeClient(edge.url, key).submit(spec_for(key, dataset="other-data"))
    assert "no dataset named 'other-data'" in caught.value.reasons[0]


def test_denied_job_status_becomes_scan_denied(edge, key):
    client = EdgeClient(edge.url, key)
    status = client.wait(client.submit(spec_for(key, code="import socket\n" + GOOD)), poll=0.05, timeout=60)
    error = final_error(status)
    assert isinstance(error, errors.ScanDenied) and "socket" in error.reasons[0]


def test_failed_job_reports_type_and_line(edge, key):
    client = EdgeClient(edge.url, key)
    job_id = client.submit(spec_for(key, code="x = 1\nraise ValueError('secret')\n"))
    status = client.wait(job_id, poll=0.05, timeout=60)
    error = final_error(status)
    assert isinstance(error, JobFailed) and error.message == "ValueError at line 2 of the cell"
    assert "secret" not in error.diagnostics()


def test_unknown_job_and_malformed_ids(edge, key):
    client = EdgeClient(edge.url, key)
    with pytest.raises(errors.NotFound):
        client.status("0" * 32)
    with pytest.raises(errors.BadInput):
        client.status("../datasets")


def test_wait_times_out(edge, key):
    client = EdgeClient(edge.url, key)
    edge.job_delay = 2.0
    try:
        with pytest.raises(errors.Fault, match="still"):
            client.wait(client.submit(spec_for(key)), poll=0.05, timeout=0.2)
    finally:
        edge.job_delay = 0.0


def test_unreachable_edge_is_a_fault_naming_the_url(key):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(errors.Fault, match=f"cannot reach the edge at {url}"):
        EdgeClient(url, key, timeout=2).edge_info()


def test_bad_url_is_bad_input(key):
    with pytest.raises(errors.BadInput):
        EdgeClient("ftp://example.invalid", key)


def test_a_runtime_message_from_the_edge_is_shown():
    status = {"job_id": "a" * 32, "state": "failed",
              "error": {"type": "ValueError", "line": 4, "message": "rapha.log takes numbers"}}
    error = final_error(status)
    assert isinstance(error, JobFailed) and error.message == "ValueError at line 4 of the cell: rapha.log takes numbers"
    assert (error.error_type, error.line, error.detail) == ("ValueError", 4, "rapha.log takes numbers")
