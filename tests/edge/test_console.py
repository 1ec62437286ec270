"""``rapha-edge console``: the hospital's web console, against a real edge.

Unit tests of the sessions and nonces; then one edge (``run_approval: one`` and release
``review`` on synthetic-cxr) and the console as a hospital person starts it (``rapha-edge
console``, a subprocess): 401 on every route without a session, 403 on every route with
researcher credentials (also beside a session), the login token working once, a key
without an admin role (or the researcher port) refused at start, the forms bounded by the
key's roles; a reject from the console audited as the CLI's, with forged, replayed,
misdirected and wrong-state POSTs refused with a clear error and nothing changed. Then, in
Debian's Chromium (headless, over the DevTools protocol): an approver logs in with the URL
the console printed, approves a job, releases it at review, and the researcher's client
receives the outputs; the screenshots are decoded and checked for the key elements (the
header, the decision buttons, the notice) and the DOM for what each page must say."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
import struct
import subprocess
import sys
import zlib
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
from tests.extension.test_labextension import Browser
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


def test_the_pages_escape_what_they_show_and_draw_progress_and_plots():
    from edge_kernel.console import pages

    running = {"job_id": "ab" * 16, "state": "running", "dataset": "<b>x</b>", "researcher": "alice",
               "submitted": "2026-01-01T10:00:00Z", "updated": "2026-01-01T10:01:00Z", "reasons": ["a & b"],
               "progress": {"records_used": 12}, "max_records": 40, "gates": []}
    ended = [{**running, "job_id": f"{i:032x}", "state": "completed", "updated": f"2026-01-0{i}T10:00:00Z",
              "progress": {"records_used": 10 * i}} for i in (1, 2, 3)]
    html = pages.jobs_page([running, *ended])
    assert '<progress class="job-progress" max="40" value="12"></progress> 12 of 40 records' in html
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html and "a &amp; b" in html
    plot = re.search(r'<svg id="records-plot".*?</svg>', html).group(0)
    assert plot.count("<circle") == 3 and ">60</text>" in plot  # cumulative: 10, 30, 60
    assert pages.progress_bar({**running, "state": "completed"}) == ""
    figures = {"membership": {"status": "checked", "auc": 0.55, "tpr_at_1pct_fpr": 0.02},
               "record_copies": {"max_correlation": 0.31, "records_matched": 0}}
    bars = pages.membership_plot(figures)
    assert bars.count("<rect") == 3 and "0.550" in bars and "0.5 (chance)" in bars
    note = pages.membership_plot({"membership": {"status": "not_checkable", "auc": None, "records_used": 8,
                                                 "holdback_size": 0}})
    assert "could not be made" in note and "<svg" not in note
    page = pages.page("t", "", who="<i>ada</i>", error="<script>")
    assert "<script>" not in page and "&lt;i&gt;ada" in page


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

    def fresh_console(self) -> tuple[str, str]:
        """A restarted console, for a new one-time login token."""
        stop_process(self.console)
        self.console, self.base, self.token = start_console(self.root, self.key_files["ada"])
        return self.base, self.token

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
    log = root.parent / "console.log"
    with open(log, "w") as handle:  # a file, not a pipe: the console's log lines never block it
        process = subprocess.Popen([sys.executable, "-m", "edge_kernel.cli", "console", "--config", str(root),
                                    "--key", str(key)], stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _URL.search(log.read_text(errors="replace"))
        if match:
            return process, match.group(1), match.group(2)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("the console did not start: " + log.read_text(errors="replace"))


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
    rebound = browser.get(site.base + "/", headers={"Host": "attacker.example"}, timeout=30)
    assert rebound.status_code == 403 and "127.0.0.1 only" in rebound.text
    for route in ROUTES[:-1]:  # with the session: each page is served
        assert browser.get(site.base + route, timeout=30).status_code in (200, 404), route


@pytest.mark.slow
def test_a_researcher_key_or_the_researcher_port_is_refused_at_start_and_roles_bound_the_forms(site, capsys):
    code = edge_cli(["console", "--config", str(site.root), "--key", str(site.key_files["bob"])])
    assert code == 1 and "a researcher key cannot open the console" in capsys.readouterr().err
    stranger = site.root.parent / "stranger.pem"
    stranger.write_bytes(PrivateKey.generate().to_pem())
    stranger.chmod(0o600)
    code = edge_cli(["console", "--config", str(site.root), "--key", str(stranger)])
    assert code == 1 and "is not registered at this edge" in capsys.readouterr().err
    # a steward-only key: the console offers no release form, and a release POST is refused unsigned
    steward = PrivateKey.generate()
    steward_file = site.root.parent / "cy.pem"
    steward_file.write_bytes(steward.to_pem())
    steward_file.chmod(0o600)
    assert edge_cli(["researchers", "add", "cy", steward.public.to_text(), "--role=data-steward",
                     "--config", str(site.root)]) == 0
    process, base, token = start_console(site.root, steward_file)
    try:
        browser = login(base, token)
        refused = browser.post(f"{base}/releases/abcdef0123456789/decide", data={"nonce": "x"}, timeout=30)
        assert refused.status_code == 403 and "does not hold the role output-checker" in refused.text
        compliance = browser.get(f"{base}/compliance", timeout=30)
        style = re.search(r"<style>(.*?)</style>", compliance.text, re.S).group(1)
        digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in compliance.headers["Content-Security-Policy"]  # its one inline style, no other
    finally:
        stop_process(process)
    port = str(load_settings(site.root).port)
    code = edge_cli(["console", "--config", str(site.root), "--key", str(site.key_files["ada"]), "--port", port])
    assert code == 1 and "the researcher API's port" in capsys.readouterr().err


@pytest.mark.slow
def test_a_reject_from_the_console_is_audited_and_bad_posts_change_nothing(site):
    job_id = site.submit()
    base, token = site.fresh_console()
    browser = login(base, token)
    assert job_id[:12] in browser.get(f"{base}/approvals", timeout=30).text
    page = browser.get(f"{base}/approvals/{job_id}", timeout=30).text
    assert "rapha.save(model)" in page and "Cost at most" in page and "one: 0 of 1 approvals" in page
    first, second = nonce_of(page), nonce_of(browser.get(f"{base}/approvals/{job_id}", timeout=30).text)
    decide = f"{base}/approvals/{job_id}/decide"

    forged = browser.post(decide, data={"nonce": "forged", "decision": "approve", "reason": "ok"}, timeout=30)
    assert forged.status_code == 403 and "nothing was signed" in forged.text
    elsewhere = browser.post(f"{base}/releases/{job_id}/decide",
                             data={"nonce": first, "decision": "approve", "reason": "ok"}, timeout=30)
    assert elsewhere.status_code == 403  # a nonce for the approval form is no release; and it is spent now
    first = nonce_of(browser.get(f"{base}/approvals/{job_id}", timeout=30).text)
    no_reason = browser.post(decide, data={"nonce": first, "decision": "reject", "reason": " "}, timeout=30)
    assert no_reason.status_code == 400 and "needs a reason" in no_reason.text
    assert requests.post(decide, data={"nonce": second, "decision": "reject", "reason": "no"},
                         timeout=30).status_code == 401  # a nonce without its session's cookie
    assert site.client().status(job_id)["state"] == "awaiting_approval"
    assert not [e for e, _, _ in site.audit(job_id) if e in ("approval.decide", "approval.refused")]

    first = nonce_of(browser.get(f"{base}/approvals/{job_id}", timeout=30).text)
    done = browser.post(decide, data={"nonce": first, "decision": "reject", "reason": "not the purpose agreed"},
                        timeout=60)
    assert done.status_code == 200 and f"rejected job {job_id} as ada: the job will not run" in done.text, done.text
    replay = browser.post(decide, data={"nonce": first, "decision": "reject", "reason": "again"}, timeout=30)
    assert replay.status_code == 403 and "already sent" in replay.text
    late = browser.post(decide, data={"nonce": second, "decision": "approve", "reason": "changed my mind"},
                        timeout=30)  # a fresh form, but the job no longer waits: the same error as the CLI's
    assert late.status_code == 400 and "is denied, not awaiting approval" in late.text, late.text
    assert "nothing changed" in late.text
    status = site.client().status(job_id)
    assert status["state"] == "denied" and "not the purpose agreed" in "; ".join(status["reasons"])
    events = site.audit(job_id)
    decided = [(a, d) for e, a, d in events if e == "approval.decide"]
    assert len(decided) == 1 and site.keys["ada"].key_id in json.dumps(decided), events
    assert [e for e, _, _ in events].count("approval.refused") == 0  # the bad POSTs never reached the edge


# ---- in Chromium ------------------------------------------------------------------------

GREEN, NOTICE, HEADER = (0, 102, 0), (221, 255, 221), (11, 61, 92)  # pages.STYLESHEET's #060, #dfd, #0b3d5c


def png_pixels(data: bytes) -> tuple[int, int, list[bytes], int]:
    """A PNG screenshot's rows (8-bit RGB or RGBA, not interlaced, as Chromium writes them)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = {}, 8
    idat = b""
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + length]
        if kind == b"IDAT":
            idat += body
        else:
            chunks[kind] = body
        at += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and colour in (2, 6) and interlace == 0
    step = 3 if colour == 2 else 4
    raw, stride, rows = zlib.decompress(idat), width * step, []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - step] if i >= step else 0
            up, corner = previous[i], previous[i - step] if i >= step else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, rows, step


def screenshot(browser: Browser) -> tuple[int, int, list[bytes], int]:
    return png_pixels(base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"]))


def colour_at(shot: tuple[int, int, list[bytes], int], x: float, y: float) -> tuple[int, int, int]:
    _, _, rows, step = shot
    row = rows[int(y)]
    return tuple(row[int(x) * step:int(x) * step + 3])  # type: ignore[return-value]


def box(browser: Browser, selector: str) -> list[float]:
    """The element's box in the viewport, scrolled into view first."""
    found = browser.wait_for(f"(() => {{ const e = document.querySelector('{selector}'); if (!e) return null;"
                             " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                             " return r.width > 0 ? [r.x, r.y, r.width, r.height] : null; })()", timeout=30)
    return found


def inside_corner(browser: Browser, selector: str) -> tuple[int, int, int]:
    """The colour, in a screenshot, just inside an element's top-left corner (past a 2-pixel
    border, before its text), once it is scrolled into view."""
    x, y, _, _ = box(browser, selector)
    return colour_at(screenshot(browser), x + 4, y + 4)


def decide(browser: Browser, reason: str, button: str) -> None:
    browser.click("#form-approve input[name=reason]")
    browser.call("Input.insertText", text=reason)
    browser.click(button)


@pytest.mark.slow
@pytest.mark.needs_browser
def test_an_approver_approves_and_releases_a_job_in_chromium_and_the_researcher_gets_the_outputs(site):
    job_id = site.submit()
    base, token = site.fresh_console()
    browser = Browser()
    try:
        browser.call("Page.navigate", url=f"{base}/login?token={token}")
        browser.wait_for("document.querySelector('h1')?.textContent === 'Jobs'", timeout=30)
        assert browser.evaluate("document.cookie") == ""  # the session cookie is HttpOnly
        assert browser.evaluate(f"document.querySelector('#jobs').innerText.includes('{job_id[:12]}')")
        assert browser.evaluate("document.querySelector('#jobs').innerText.includes('awaiting_approval')")
        shot = screenshot(browser)
        assert colour_at(shot, 3, 3) == HEADER  # the console's header bar: its own stylesheet loaded under the CSP

        browser.click('header a[href="/approvals"]')
        browser.click(f'#approvals a[href="/approvals/{job_id}"]')
        browser.wait_for("document.querySelector('#cell')?.textContent.includes('rapha.save(model)')", timeout=30)
        facts = browser.evaluate("document.querySelector('#approval').innerText")
        assert "one: 0 of 1 approvals" in facts and "Cost at most" in facts and "Request digest" in facts, facts
        assert inside_corner(browser, "#form-approve button") == GREEN
        decide(browser, "cohort and code as agreed with the DAC", "#form-approve button")
        notice = browser.wait_for("document.querySelector('#notice')?.textContent", timeout=60)
        assert f"approved job {job_id} as ada: approved to run" in notice, notice
        assert inside_corner(browser, "#notice") == NOTICE
        assert browser.evaluate("document.querySelector('#form-approve') === null")  # nothing left to decide

        site.wait_for(job_id, lambda s: s["state"] == "held" and s["progress"].get("review_needed"))
        browser.call("Page.navigate", url=f"{base}/releases")
        browser.click(f'#releases a[href="/releases/{job_id}"]')
        checks = browser.wait_for("document.querySelector('#checks')?.innerText", timeout=30)
        assert "membership" in checks and "record_copies" in checks and "capacity" in checks, checks
        assert browser.evaluate("document.querySelector('#membership-plot rect') !== null")
        assert browser.evaluate("document.querySelectorAll('script').length") == 0
        assert inside_corner(browser, "#form-approve button") == GREEN
        assert browser.evaluate("document.querySelector('#form-approve button').textContent") == \
            "Release to the researcher"
        decide(browser, "aggregate model, checks clean", "#form-approve button")
        notice = browser.wait_for("document.querySelector('#notice')?.textContent", timeout=150)
        assert f"approved job {job_id} as ada: released to the researcher" in notice, notice

        browser.call("Page.navigate", url=f"{base}/audit")
        audit = browser.wait_for("document.querySelector('#audit')?.innerText", timeout=30)
        assert "approval.decide" in audit and "release.review" in audit
        assert browser.evaluate("document.querySelector('#chain').textContent").startswith("Chain verified")
        for route, selector, words in (
                ("/", "#records-plot", ""), ("/", "#jobs", "completed"), ("/datasets", "#datasets", "synthetic-cxr"),
                ("/researchers", "#researchers", "data-steward, output-checker"),
                ("/edge", "#attestation", "last quote SHA-256"), ("/edge", "#outbox", "receipts in the outbox"),
                (f"/jobs/{job_id}", "#job", "completed")):
            browser.call("Page.navigate", url=f"{base}{route}")
            text = browser.wait_for(f"document.querySelector('{selector}')?.outerHTML", timeout=30)
            assert words in text, (route, text[:2000])
        browser.call("Page.navigate", url=f"{base}/compliance")
        assert "Compliance of edge" in browser.wait_for("document.querySelector('h1')?.textContent", timeout=30)
        # its stylesheet applied under the page's CSP (by its digest): the status column of a met control is green
        assert browser.evaluate("getComputedStyle(document.querySelector('tr.met td:nth-child(5)')).color") == \
            "rgb(0, 102, 0)"
    finally:
        browser.close()

    # the researcher's client receives the outputs the approver released
    client = site.client()
    assert client.status(job_id)["state"] == "completed"
    assert len(client.weights(job_id)) > 0 and client.metrics(job_id)
