"""S8 at the HTTP boundary: only fresh requests signed by registered keys get in, and a
refused request leaves nothing behind but its audit entry (one summary row per window
for requests nobody authenticated)."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
import requests

from jupyter_rapha.protocol.canonical import canonical_json
from jupyter_rapha.protocol.jobspec import code_digest
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.request import sign_request

pytestmark = pytest.mark.slow


def job_body(key: PrivateKey) -> bytes:
    code = "rapha.log(loss=1.0)\n"
    spec = {"version": 1, "job_id": "a" * 32, "researcher_key_id": key.key_id, "created": "2026-11-27T10:00:00Z",
            "nonce": "c" * 32, "code": code, "code_sha256": code_digest(code), "dataset": "synthetic-cxr",
            "fields": ["image", "finding"], "budget": {"max_records": 10, "max_seconds": 60}}
    return canonical_json({"spec": spec})


def post(url, body, header=None):
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Authorization"] = header
    return requests.post(url + "/v1/jobs", data=body, headers=headers, timeout=10)


def stored(edge):
    db = sqlite3.connect(edge.config / "state" / "edge.sqlite")
    try:
        return (db.execute("SELECT count(*) FROM jobs").fetchone()[0],
                [r[0] for r in db.execute("SELECT event FROM audit ORDER BY seq")])
    finally:
        db.close()


def test_bad_requests_get_4xx_and_leave_only_an_audit_entry(demo_edge):
    edge, key = demo_edge
    body = job_body(key)
    now = int(time.time())
    stranger = PrivateKey.generate()
    cases = [
        ("unsigned", None, body, 401, "not signed"),
        ("unknown key", sign_request(stranger, "POST", "/v1/jobs", body, now), body, 401, "not registered"),
        ("expired", sign_request(key, "POST", "/v1/jobs", body, now - 3600), body, 401, "clock"),
        ("wrong body", sign_request(key, "POST", "/v1/jobs", b"{}", now), body, 401, "signature"),
        ("malformed header", 'Rapha-Ed25519 keyId="x"', body, 401, "lacks"),
    ]
    for label, header, data, status, words in cases:
        response = post(edge.url, data, header)
        assert response.status_code == status, label
        assert words in response.json()["error"]["message"], (label, response.text)
    edge.stop()  # anonymous refusals are summarised per window; stopping the edge writes the summary
    jobs, events = stored(edge)
    assert jobs == 0
    assert events.count("request.reject") == 1
    assert refusal_summaries(edge) == [{"Unsigned": 1, "UnknownKey": 1, "Expired": 1, "BadSignature": 1,
                                        "AuthError": 1}]


def refusal_summaries(edge):
    db = sqlite3.connect(edge.config / "state" / "edge.sqlite")
    try:
        return [json.loads(d)["kinds"] for (d,) in db.execute("SELECT detail FROM audit WHERE event='request.reject'")]
    finally:
        db.close()


def test_malformed_spec_is_400_with_what_to_fix(demo_edge):
    edge, key = demo_edge
    body = json.dumps({"spec": {"version": 1}}).encode()
    response = post(edge.url, body, sign_request(key, "POST", "/v1/jobs", body, int(time.time())))
    assert response.status_code == 400
    assert "must be" in response.json()["error"]["message"]
    assert stored(edge)[0] == 0


def test_replayed_request_is_refused(demo_edge):
    edge, key = demo_edge
    body = job_body(key)
    header = sign_request(key, "POST", "/v1/jobs", body, int(time.time()))
    assert post(edge.url, body, header).status_code == 202
    replay = post(edge.url, body, header)
    assert replay.status_code == 401
    assert "already received" in replay.json()["error"]["message"]
    assert stored(edge)[0] == 1


def test_researchers_see_only_their_own_jobs(demo_edge, tmp_path):
    edge, key = demo_edge
    body = job_body(key)
    assert post(edge.url, body, sign_request(key, "POST", "/v1/jobs", body, int(time.time()))).status_code == 202
    from edge_kernel.cli import main as edge_cli
    other = PrivateKey.generate()
    assert edge_cli(["researchers", "add", "bob", other.public.to_text(), "--config", str(edge.config)]) == 0
    path = "/v1/jobs/" + "a" * 32
    response = requests.get(edge.url + path,
                            headers={"Authorization": sign_request(other, "GET", path, b"", int(time.time()))})
    assert response.status_code == 404
    listing = requests.get(edge.url + "/v1/jobs",
                           headers={"Authorization": sign_request(other, "GET", "/v1/jobs", b"", int(time.time()))})
    assert listing.json() == {"jobs": []}
