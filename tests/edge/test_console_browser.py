"""The hospital's console in Debian's Chromium (headless, driven over the DevTools protocol):
an approver logs in with the URL ``rapha-edge console`` printed, approves a job waiting on
a ``run_approval: one`` dataset, releases it at review, and the researcher's client then
receives the outputs. The screenshots are read back for the key elements (the decision
buttons, the notice, the header) and the DOM for what each page must say."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest

from tests.edge.test_console import Site
from tests.extension.test_labextension import Browser

pytestmark = [pytest.mark.slow, pytest.mark.needs_browser]

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


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    running = Site(tmp_path_factory.mktemp("console-browser") / "edge")
    try:
        yield running
    finally:
        running.stop()


def test_an_approver_approves_and_releases_a_job_in_chromium_and_the_researcher_gets_the_outputs(site):
    job_id = site.submit()
    browser = Browser()
    try:
        browser.call("Page.navigate", url=f"{site.base}/login?token={site.token}")
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
        browser.call("Page.navigate", url=f"{site.base}/releases")
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

        browser.call("Page.navigate", url=f"{site.base}/audit")
        audit = browser.wait_for("document.querySelector('#audit')?.innerText", timeout=30)
        assert "approval.decide" in audit and "release.review" in audit
        assert browser.evaluate("document.querySelector('#chain').textContent").startswith("Chain verified")
    finally:
        browser.close()

    # the researcher's client receives the outputs the approver released
    client = site.client()
    assert client.status(job_id)["state"] == "completed"
    assert len(client.weights(job_id)) > 0 and client.metrics(job_id)
