"""Every /v1 and /chain route of a running edge under hostile requests: bodies, headers,
query strings, methods, signed and not. Every answer is below 500 and, for the /v1
routes, a refusal is a 4xx with a JSON error body; the edge is alive at the end and
logged no unhandled error."""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse

import pytest
import requests
from hypothesis import event, given
from hypothesis import strategies as st

from jupyter_rapha.protocol.jobspec import code_digest
from jupyter_rapha.protocol.request import sign_request
from tests.fuzz.strategies import NASTY_STRINGS, budget, every_mutation, json_bytes, json_values

pytestmark = pytest.mark.slow
JOB = "f" * 32
CODE = "rapha.log(loss=1.0)\n"
# dataset unknown to the demo edge: a spec that parses is refused at the gates, no job runs
SPEC = {"version": 1, "job_id": JOB, "researcher_key_id": "", "created": "2026-11-27T10:00:00Z", "nonce": "c" * 32,
        "code": CODE, "code_sha256": code_digest(CODE), "dataset": "no-such-dataset", "fields": ["image"],
        "budget": {"max_records": 2, "max_seconds": 30}}
ROUTES = ["/v1/edge", "/v1/datasets", "/v1/catalog", "/v1/policy", "/v1/jobs", f"/v1/jobs/{JOB}",
          f"/v1/jobs/{JOB}/events", f"/v1/jobs/{JOB}/receipt", f"/v1/jobs/{JOB}/metrics", f"/v1/jobs/{JOB}/weights",
          "/v1/jobs/" + "0" * 32, "/chain", "/v1/nothing", "/"]
METHODS = ["GET", "GET", "GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"]
# Header values as they go on the wire (Latin-1), less control characters: those break
# HTTP itself, and tornado answers them with a bare 400 and a closed connection before any
# route runs.
latin1 = st.text(st.characters(max_codepoint=255, exclude_categories=["Cc"]), max_size=60)


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    from tests.harness import init_edge, start_edge

    root = tmp_path_factory.mktemp("fuzz-edge") / "edge"
    key = init_edge(root)
    running = start_edge(root)
    spec = json.dumps({"spec": {**SPEC, "researcher_key_id": key.key_id}}).encode()
    assert send(running, key, "POST", "/v1/jobs", spec, "signed")[0] == 202
    try:
        yield running, key
    finally:
        running.stop()


def send(edge, key, method: str, path: str, body: bytes, auth: str) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"}
    if auth == "signed":
        headers["Authorization"] = sign_request(key, method, path, body, int(time.time()))
    elif auth:
        headers["Authorization"] = auth
    connection = http.client.HTTPConnection(edge.url.split("//")[1], timeout=30)
    try:
        connection.request(method, path, body=body, headers={k: v.encode("latin-1") for k, v in headers.items()})
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


def query(values: list[tuple[str, str]]) -> str:
    if not values:
        return ""
    return "?" + "&".join(f"{urllib.parse.quote(k, safe='', errors='surrogatepass')}="
                          f"{urllib.parse.quote(v, safe='', errors='surrogatepass')}" for k, v in values)


@st.composite
def bodies(draw, key_id: str) -> bytes:
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(json_bytes)
    if kind == 1:  # a job spec with one node made hostile
        mutations = list(every_mutation({**SPEC, "researcher_key_id": key_id}))
        _, _, spec = draw(st.sampled_from(mutations))
        return json.dumps({"spec": spec}).encode("utf-8", "surrogatepass")
    return json.dumps(draw(json_values)).encode("utf-8", "surrogatepass")


@st.composite
def requests_(draw, key_id: str):
    target = draw(st.integers(0, 4))
    if target <= 1:  # a signed job submission with a hostile body: the deepest path a stranger reaches
        return "POST", "/v1/jobs", draw(bodies(key_id)), "signed"
    if target == 2:  # the public chain endpoint
        return "POST", "/chain", draw(bodies(key_id)), draw(st.sampled_from(["", "signed"]))
    path = draw(st.sampled_from(ROUTES))
    path += query(draw(st.lists(st.tuples(st.sampled_from(["after", "x", ""]) | st.text(max_size=5),
                                          st.sampled_from(NASTY_STRINGS) | st.text(max_size=20)), max_size=2)))
    method = draw(st.sampled_from(METHODS))
    auth = draw(st.sampled_from(["signed", "signed", "", "Rapha-Ed25519 x", 'Rapha-Ed25519 keyId="a", ts="\u00b2"'])
                | latin1)
    body = draw(bodies(key_id)) if method in ("POST", "PUT", "PATCH") or draw(st.booleans()) else b""
    return method, path, body, auth


@budget(200)
@given(st.data())
def test_hostile_requests_on_every_route_are_answered_below_500_in_json(edge, data):
    running, key = edge
    method, path, body, auth = data.draw(requests_(key.key_id))
    status, headers, content = send(running, key, method, path, body, auth)
    event(f"HTTP {status}")  # --hypothesis-show-statistics: how far the requests got
    assert status < 500, (method, path, body[:200], auth, content[:300])
    if status >= 400:
        assert headers.get("Content-Type", "").startswith("application/json"), (status, headers)
        answer = json.loads(content)
        assert "error" in answer, answer


def test_the_edge_is_alive_and_logged_no_unhandled_error(edge):
    running, _ = edge
    assert running.process.poll() is None
    assert requests.get(running.url + "/v1/edge", timeout=10).status_code == 200
    assert "unhandled error" not in running.log() and "Traceback" not in running.log(), running.log()[-3000:]
