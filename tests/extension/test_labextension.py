"""The JupyterLab side panel (labextension/, TypeScript) in a real JupyterLab: the prebuilt
extension is found and served, and in a headless Chromium the panel lists the jobs of two
real edges, and its "Verify receipt" checks a completed job's receipt."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.data.orthanc import free_port
from tests.edge.test_cancel import LONG
from tests.extension.test_api import GOOD_CELL
from tests.harness import stop_process

pytestmark = pytest.mark.slow
BUILT = Path(__file__).resolve().parents[2] / "jupyter_rapha" / "labextension"


@pytest.fixture(scope="module")
def lab(edge_config, tmp_path_factory):
    """``jupyter lab`` as a researcher starts it, on loopback, with the extension configured."""
    root = tmp_path_factory.mktemp("lab")
    (root / "config").mkdir()
    config = {"ServerApp": {"jpserver_extensions": {"jupyter_rapha": True, "jupyterlab": True}},
              "RaphaExtension": edge_config}
    (root / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
    port, token = free_port(), secrets.token_hex(16)
    # This checkout's build of the extension, ahead of whichever one the environment links.
    (root / "share" / "labextensions").mkdir(parents=True)
    (root / "share" / "labextensions" / "jupyter-rapha").symlink_to(BUILT.resolve())
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / "config"), "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
           "JUPYTER_PATH": os.pathsep.join(filter(None, [str(root / "share"), os.environ.get("JUPYTER_PATH")]))}
    log = open(root / "lab.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         *(["--allow-root"] if os.geteuid() == 0 else []),
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/api/status", params={"token": token}, timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("jupyter lab did not start:\n" + (root / "lab.log").read_text()[-3000:])
            time.sleep(0.2)
        yield url, token
    finally:
        stop_process(process)
        log.close()


def _page_config(url: str, token: str) -> dict:
    html = requests.get(f"{url}/lab", params={"token": token}, timeout=30).text
    found = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S)
    assert found, "JupyterLab's page has no config data"
    return json.loads(found.group(1))


def test_the_prebuilt_extension_is_found_and_served(lab):
    url, token = lab
    [ours] = [e for e in _page_config(url, token)["federated_extensions"] if e["name"] == "jupyter-rapha"]
    entry = requests.get(f"{url}/lab/extensions/jupyter-rapha/{ours['load']}", params={"token": token}, timeout=30)
    assert entry.status_code == 200 and "jupyter-rapha" in entry.text
    static = BUILT / "static"
    assert any("jupyter-rapha:jobs" in path.read_text("utf-8") for path in static.glob("*.js"))


class Browser:
    """Headless Chromium driven over the DevTools protocol (no driver download)."""

    def __init__(self) -> None:
        import websocket

        self.profile = tempfile.mkdtemp(prefix="rapha-chromium-")
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("chromium did not start")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        [page] = [t for t in requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
                  if t["type"] == "page"]
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click at the element's centre, as a user's (Lumino listens to
        pointer events, which a scripted ``click()`` does not send)."""
        box = self.wait_for(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
                            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                            " return r.width > 0 ? [r.x + r.width / 2, r.y + r.height / 2] : null; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def wait_for(self, expression: str, timeout: float = 90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.25)
        panel = self.evaluate("document.querySelector('#jupyter-rapha-jobs')?.innerText")
        raise AssertionError(f"timed out waiting for {expression}; the panel shows: {panel!r}")

    def close(self) -> None:
        self.socket.close()
        stop_process(self.process, timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.mark.needs_browser
def test_the_side_panel_lists_jobs_and_verifies_a_receipt_in_a_browser(lab):
    url, token = lab
    api = f"{url}/rapha/api"
    headers = {"Authorization": f"token {token}"}
    submitted = requests.post(f"{api}/jobs", json={"dataset": "synthetic-cxr", "site": "north", "code": GOOD_CELL,
                                                   "budget": 8}, headers=headers, timeout=60)
    assert submitted.status_code == 202, submitted.text
    [job] = submitted.json()["jobs"]
    deadline = time.monotonic() + 120
    while requests.get(f"{api}/jobs/{job['job_id']}", headers=headers, timeout=30).json()["state"] != "completed":
        assert time.monotonic() < deadline, "the job did not complete"
        time.sleep(0.3)

    browser = Browser()
    try:
        browser.call("Page.navigate", url=f"{url}/lab?token={token}")
        # JupyterLab loads the extension; its tab sits in the left side bar.
        browser.wait_for("document.querySelector('.jp-SideBar [data-id=\"jupyter-rapha-jobs\"]') !== null")
        browser.wait_for("document.querySelector('#jupyterlab-splash') === null")  # layout restored
        browser.click('.jp-SideBar [data-id="jupyter-rapha-jobs"]')
        # the edges view: what each edge offers, and the environment its signed catalog lists
        edge_view = browser.wait_for("document.querySelector('#jupyter-rapha-jobs [data-edge=\"north\"]')?.innerText")
        assert f"Python {platform.python_version()}, " in edge_view, edge_view
        assert f"monai {importlib.metadata.version('monai')}" in edge_view and "synthetic-cxr" in edge_view
        row = f"#jupyter-rapha-jobs [data-job-id=\"{job['job_id']}\"]"
        title = browser.wait_for(f"document.querySelector('{row} .jp-RaphaJobs-title')?.textContent")
        assert "synthetic-cxr @ north" in title and "completed" in title
        assert browser.evaluate(f"document.querySelector('{row} .jp-RaphaJobs-cancel') === null")
        # the released loss, drawn with both axes titled (one value, from the one epoch asked)
        axes = browser.wait_for(f"(() => {{ const s = document.querySelector('{row} svg.jp-RaphaJobs-loss');"
                                " return s && [...s.querySelectorAll('text.x-label, text.y-label')]"
                                ".map(t => t.textContent).join('|'); })()")
        assert axes == "epoch|loss", axes
        caption = browser.evaluate(f"document.querySelector('{row} .jp-RaphaJobs-chart-caption')?.textContent")
        assert caption == "loss: 1 → 1 over 1 epoch (released)", caption
        browser.click(f"{row} .jp-RaphaJobs-verify")
        verdict = browser.wait_for(f"document.querySelector('{row} .jp-RaphaJobs-verdict')?.textContent")
        # the demo edge attests with the software stand-in: the receipt widget's words and orange
        assert verdict == "Receipt verified, with warnings: attestation (UNSAFE)", verdict
        colour = browser.evaluate(f"getComputedStyle(document.querySelector('{row} .jp-RaphaJobs-verdict')).color")
        assert colour == "rgb(188, 76, 0)", colour
        checks = browser.evaluate(
            f"[...document.querySelectorAll('{row} table.jp-RaphaJobs-checks tr')]"
            ".map(r => [...r.cells].map(c => c.textContent))")
        by_name = {name: badge for badge, name, _ in checks}
        assert by_name["signature"] == "PASS" and by_name["anchor"] == "PASS", checks
        assert by_name["attestation"] == "WARN", checks
        assert browser.evaluate(f"document.querySelector('{row} .jp-RaphaJobs-report pre') === null")
        # the verification stays through the panel's next refresh
        browser.click("#jupyter-rapha-jobs .jp-RaphaJobs-refresh")
        time.sleep(1)
        assert browser.evaluate(f"document.querySelector('{row} .jp-RaphaJobs-verdict') !== null")

        # a long job cancelled from the panel ends "cancelled", not "failed"
        submitted = requests.post(f"{api}/jobs", json={"dataset": "synthetic-cxr", "site": "north", "code": LONG,
                                                       "budget": 32, "epochs": 100}, headers=headers, timeout=60)
        assert submitted.status_code == 202, submitted.text
        [long_job] = submitted.json()["jobs"]
        long_row = f"#jupyter-rapha-jobs [data-job-id=\"{long_job['job_id']}\"]"
        browser.click("#jupyter-rapha-jobs .jp-RaphaJobs-refresh")
        # while it runs no value has left the edge: progress only, and the chart says why
        pending = browser.wait_for(f"document.querySelector('{long_row} .jp-RaphaJobs-chart-pending')?.textContent")
        assert pending == "loss is released after the output checks"
        assert browser.evaluate(f"document.querySelector('{long_row} svg') === null")
        browser.click(f"{long_row} .jp-RaphaJobs-cancel")
        state = browser.wait_for(f"(() => {{ const s = document.querySelector('{long_row} .jp-RaphaJobs-state');"
                                 " return s && s.textContent === 'cancelled' ? s.textContent : null; })()")
        assert state == "cancelled"
        assert browser.evaluate(f"document.querySelector('{long_row} .jp-RaphaJobs-cancel') === null")
        status = requests.get(f"{api}/jobs/{long_job['job_id']}", headers=headers, timeout=30).json()
        assert status["state"] == "cancelled" and status["reasons"] == ["cancelled by the researcher"]
    finally:
        browser.close()
