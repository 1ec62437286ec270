"""``rapha-edge console``: the hospital's web console, against a real edge.

Unit tests of the sessions and nonces; then one edge and one console (``rapha-edge
console`` as a subprocess, as a hospital person starts it): 401 on every route without a
session, 403 on every route with researcher credentials (also beside a session), the
login token working once, a key without an admin role refused at start; a job on a
``run_approval: one`` dataset whose release mode is ``review`` approved and released from
the console's forms, each action audited as the CLI's are, and a forged, replayed,
misdirected or wrong-state POST refused with a clear error and nothing changed."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from edge_kernel.cli import main as edge_cli
from edge_kernel.console.app import Sessions
from edge_kernel.settings import load_settings
from jupyter_rapha.client import EdgeClient, make_jobspec
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.request import sign_request
from tests.harness import init_edge, start_edge, stop_process

CELL = """
import torch
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 2))
optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
for batch in rapha.loader(batch_size=4, shuffle=True, seed=1):
    loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["finding"])
    optimiser.zero_grad(); loss.backward(); optimiser.step()
    rapha.log(loss=float(loss))
rapha.save(model)
"""
_URL = re.compile(r"(http://127\.0\.0\.1:\d+)/login\?token=(\S+)")
ROUTES = ["/", "/jobs/abcdef0123456789", "/approvals", "/approvals/abcdef0123456789", "/releases",
          "/releases/abcdef0123456789", "/datasets", "/researchers", "/audit", "/edge", "/compliance",
          "/console.css", "/no-such-page"]
POSTS = ["/approvals/abcdef0123456789/decide", "/releases/abcdef0123456789/decide"]


# ---- units -------------------------------------------------------------------------------

def test_the_login_token_works_once_and_a_nonce_once_for_its_own_action_and_job():
    now = [1000.0]
    sessions = Sessions(clock=lambda: now[0])
    token = sessions.token
    assert sessions.login("wrong") is None
    cookie = sessions.login(token)
    assert cookie and sessions.login(token) is None  # spent
    session = sessions.get(cookie)
    assert session is not None and sessions.get("forged") is None
    nonce = sessions.make_nonce(session, "approval", "job1")
    assert not sessions.spend_nonce(session, nonce, "release", "job1")  # another action: refused and spent
    nonce = sessions.make_nonce(session, "approval", "job1")
    assert not sessions.spend_nonce(session, nonce, "approval", "job2")
    nonce = sessions.make_nonce(session, "approval", "job1")
    assert sessions.spend_nonce(session, nonce, "approval", "job1")
    assert not sessions.spend_nonce(session, nonce, "approval", "job1")  # a replay
    stale = sessions.make_nonce(session, "approval", "job1")
    now[0] += 3601
    assert not sessions.spend_nonce(session, stale, "approval", "job1")
    now[0] += 8 * 3600
    assert sessions.get(cookie) is None  # the session ended


# ---- against a real edge -----------------------------------------------------------------



class Site:
    """A demo edge: alice a researcher, ada a data steward and output checker (the console's
    key), bob a researcher only; synthetic-cxr asks for one approval and a release review."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys = {"alice": init_edge(root, records=40), "ada": PrivateKey.generate(), "bob": PrivateKey.generate()}
        self.key_files = {}
        for name, roles in (("ada", ["data-steward", "output-checker"]), ("bob", ["researcher"])):
            self.key_files[name] = root.parent / f"{name}.pem"
            self.key_files[name].write_bytes(self.keys[name].to_pem())
            self.key_files[name].chmod(0o600)
            assert edge_cli(["researchers", "add", name, self.keys[name].public.to_text(),
                             *[f"--role={r}" for r in roles], "--config", str(root)]) == 0
        path = root / "policies" / "data.json"
        data = json.loads(path.read_text())
        data["hospital"]["datasets"]["synthetic-cxr"]["run_approval"] = "one"
        data["hospital"]["release"]["datasets"]["synthetic-cxr"] = {"mode": "review"}
        path.write_text(json.dumps(data))
        self.edge = start_edge(root)
        self.console, self.base, self.token = start_console(root, self.key_files["ada"])

    def stop(self) -> None:
        stop_process(self.console)
        self.edge.stop()

    def client(self) -> EdgeClient:
        return EdgeClient(self.edge.url, self.keys["alice"])

    def submit(self) -> str:
        spec = make_jobspec(CELL, "synthetic-cxr", ["image", "finding"], 8, 120, {"epochs": 1},
                            self.keys["alice"].key_id)
        job_id = self.client().submit(spec)
        self.wait_for(job_id, lambda s: s["state"] == "awaiting_approval")
        return job_id

    def wait_for(self, job_id: str, done, timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.client().status(job_id)
            if done(status):
                return status
            assert status["state"] in ("submitted", "awaiting_approval", "running", "held"), status
            time.sleep(0.3)
        raise AssertionError(f"job {job_id}: {self.client().status(job_id)}")

    def audit(self, job_id: str) -> list[tuple[str, str, dict]]:
        db = sqlite3.connect(f"file:{load_settings(self.root).db_path}?mode=ro", uri=True)
        try:
            return [(e, a, json.loads(d)) for e, a, d in db.execute(
                "SELECT event, actor, detail FROM audit WHERE job_id=? ORDER BY seq", (job_id,))]
        finally:
            db.close()


def start_console(root: Path, key: Path, timeout: float = 60) -> tuple[subprocess.Popen, str, str]:
    process = subprocess.Popen([sys.executable, "-m", "edge_kernel.cli", "console", "--config", str(root),
                                "--key", str(key)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        match = _URL.search(line)
        if match:
            return process, match.group(1), match.group(2)
        if not line and process.poll() is not None:
            break
    process.kill()
    raise RuntimeError("the console did not start: " + "".join(lines))


def login(base: str, token: str) -> requests.Session:
    browser = requests.Session()
    answer = browser.get(f"{base}/login", params={"token": token}, timeout=30)
    assert answer.status_code == 200 and "<h1>Jobs</h1>" in answer.text, answer.text
    cookie = answer.history[0].headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
    return browser


def nonce_of(page: str) -> str:
    return re.search(r'name="nonce" value="([^"]+)"', page).group(1)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    running = Site(tmp_path_factory.mktemp("console") / "edge")
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.slow
def test_no_session_401_and_researcher_credentials_403_on_every_route(site):
    for route in ROUTES:
        answer = requests.get(site.base + route, timeout=30)
        assert answer.status_code == 401 and "no console session" in answer.text, route
        assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    for route in POSTS:
        assert requests.post(site.base + route, data={"nonce": "x"}, timeout=30).status_code == 401
    browser = login(site.base, site.token)
    assert requests.get(f"{site.base}/login", params={"token": site.token}, timeout=30).status_code == 403  # once
    signer = site.keys["alice"]
    for route in [*ROUTES, "/login"]:
        header = {"Authorization": sign_request(signer, "GET", route, b"", int(time.time()))}
        for who in (requests, browser):  # alone, and beside a valid session
            answer = who.get(site.base + route, headers=header, timeout=30)
            assert answer.status_code == 403 and "researcher" in answer.text, (route, answer.status_code)
    for route in POSTS:
        header = {"Authorization": sign_request(signer, "POST", route, b"", int(time.time()))}
        assert browser.post(site.base + route, data={"nonce": "x"}, headers=header, timeout=30).status_code == 403
    for route in ROUTES[:-1]:  # with the session: each page is served
        assert browser.get(site.base + route, timeout=30).status_code in (200, 404), route


@pytest.mark.slow
def test_a_researcher_key_or_the_researcher_port_is_refused_at_start(site, capsys):
    code = edge_cli(["console", "--config", str(site.root), "--key", str(site.key_files["bob"])])
    assert code == 1 and "a researcher key cannot open the console" in capsys.readouterr().err
    stranger = site.root.parent / "stranger.pem"
    stranger.write_bytes(PrivateKey.generate().to_pem())
    stranger.chmod(0o600)
    code = edge_cli(["console", "--config", str(site.root), "--key", str(stranger)])
    assert code == 1 and "is not registered at this edge" in capsys.readouterr().err
    port = str(load_settings(site.root).port)
    code = edge_cli(["console", "--config", str(site.root), "--key", str(site.key_files["ada"]), "--port", port])
    assert code == 1 and "the researcher API's port" in capsys.readouterr().err


@pytest.mark.slow
def test_approve_and_release_from_the_console_audited_and_bad_posts_change_nothing(site):
    job_id = site.submit()
    # a fresh console: the module's other test spent the first one's token
    stop_process(site.console)
    site.console, site.base, site.token = start_console(site.root, site.key_files["ada"])
    browser = login(site.base, site.token)
    assert job_id[:12] in browser.get(f"{site.base}/approvals", timeout=30).text
    page = browser.get(f"{site.base}/approvals/{job_id}", timeout=30).text
    assert "rapha.save(model)" in page and "Cost at most" in page and "one: 0 of 1 approvals" in page
    first, second = nonce_of(page), nonce_of(browser.get(f"{site.base}/approvals/{job_id}", timeout=30).text)
    decide = f"{site.base}/approvals/{job_id}/decide"

    forged = browser.post(decide, data={"nonce": "forged", "decision": "approve", "reason": "ok"}, timeout=30)
    assert forged.status_code == 403 and "nothing was signed" in forged.text
    elsewhere = browser.post(f"{site.base}/releases/{job_id}/decide",
                             data={"nonce": first, "decision": "approve", "reason": "ok"}, timeout=30)
    assert elsewhere.status_code == 403  # a nonce for the approval form is no release; and it is spent now
    first = nonce_of(browser.get(f"{site.base}/approvals/{job_id}", timeout=30).text)
    no_reason = browser.post(decide, data={"nonce": first, "decision": "approve", "reason": " "}, timeout=30)
    assert no_reason.status_code == 400 and "needs a reason" in no_reason.text
    assert requests.post(decide, data={"nonce": second, "decision": "approve", "reason": "ok"},
                         timeout=30).status_code == 401  # a nonce without its session's cookie
    assert site.client().status(job_id)["state"] == "awaiting_approval"
    assert not [e for e, _, _ in site.audit(job_id) if e in ("approval.decide", "approval.refused")]

    first = nonce_of(browser.get(f"{site.base}/approvals/{job_id}", timeout=30).text)
    done = browser.post(decide, data={"nonce": first, "decision": "approve", "reason": "cohort and code as agreed"},
                        timeout=60)
    assert done.status_code == 200 and f"approved job {job_id} as ada" in done.text, done.text
    replay = browser.post(decide, data={"nonce": first, "decision": "approve", "reason": "again"}, timeout=30)
    assert replay.status_code == 403 and "already sent" in replay.text
    late = browser.post(decide, data={"nonce": second, "decision": "reject", "reason": "changed my mind"},
                        timeout=30)  # a fresh form, but the job no longer waits: the same error as the CLI's
    assert late.status_code == 400 and "not awaiting approval" in late.text and "nothing changed" in late.text

    site.wait_for(job_id, lambda s: s["state"] == "held" and s["progress"].get("review_needed"))
    page = browser.get(f"{site.base}/releases/{job_id}", timeout=30).text
    assert 'id="checks"' in page and "Outputs digest" in page and "Release to the researcher" in page
    assert "<svg" in page and "<script" not in page
    nonce = nonce_of(page)
    released = browser.post(f"{site.base}/releases/{job_id}/decide",
                            data={"nonce": nonce, "decision": "approve", "reason": "aggregate model, checks clean"},
                            timeout=150)
    assert released.status_code == 200 and "released to the researcher" in released.text, released.text
    assert site.client().status(job_id)["state"] == "completed"
    assert site.client().weights(job_id)

    events = site.audit(job_id)
    decide_rows = [(a, d) for e, a, d in events if e == "approval.decide"]
    review_rows = [(a, d) for e, a, d in events if e == "release.review"]
    assert len(decide_rows) == 1 and len(review_rows) == 1, events
    assert site.keys["ada"].key_id in json.dumps(decide_rows) and site.keys["ada"].key_id in json.dumps(review_rows)
    assert [e for e, _, _ in events].count("approval.refused") == 0  # the late form was stopped before signing

    pages = {route: browser.get(site.base + route, timeout=30).text for route in
             ("/", "/datasets", "/researchers", "/audit", "/edge", "/compliance", f"/jobs/{job_id}")}
    assert "records-plot" in pages["/"] and job_id[:12] in pages["/"]
    assert "synthetic-cxr" in pages["/datasets"] and "one" in pages["/datasets"]
    assert "data-steward, output-checker" in pages["/researchers"]
    assert "Chain verified" in pages["/audit"] and "release.review" in pages["/audit"]
    attestation = re.search(r"<table id=\"attestation\">.*?</table>", pages["/edge"]).group(0)
    assert "last quote SHA-256" in attestation and "unsafe_software" in attestation, attestation
    assert "Compliance of edge" in pages["/compliance"] and "<script" not in pages["/compliance"]
