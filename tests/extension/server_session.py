"""A real `jupyter server` with the rapha extension, and its kernels driven as a browser
drives them, for the tests that take the path a JupyterLab user takes.

How: the fixture ``jupyter`` starts `python -m jupyter_server` as a subprocess on 127.0.0.1
with the extension enabled and configured (two real edges, the researcher key); ``Kernel``
starts a kernel through the server's REST API and runs code over the kernel's websocket
(/api/kernels/{id}/channels, Jupyter message protocol v5). The kernel is a child of the
server, so the magic finds the server by its parent pid.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import websocket

from tests.harness import stop_process

ROOT = Path(__file__).resolve().parents[2]
TOKEN = uuid.uuid4().hex


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def jupyter(tmp_path, edge_config, two_edges):
    config_dir, runtime = tmp_path / "config", tmp_path / "runtime"
    config_dir.mkdir()
    (config_dir / "jupyter_server_config.json").write_text(json.dumps({
        "ServerApp": {"jpserver_extensions": {"jupyter_rapha": True}},
        "RaphaExtension": edge_config}))
    port = free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config_dir), JUPYTER_RUNTIME_DIR=str(runtime),
               EDGE_URL=two_edges["north"].url, RAPHA_KEY=str(tmp_path / "kernel-side.pem"),
               RAPHA_OUT=str(tmp_path / "out"), RAPHA_PROGRESS="text")
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1",
                                f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
                                f"--IdentityProvider.token={TOKEN}", "--ServerApp.open_browser=False",
                                "--ServerApp.allow_root=True",
                                f"--ServerApp.root_dir={ROOT / 'examples'}"],
                               stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, process, tmp_path / "server.log")
        yield url, tmp_path
    finally:
        stop_process(process, timeout=30)


def wait_up(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if requests.get(url + "/api/status", headers=auth(), timeout=2).ok:
                return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError("jupyter server did not start:\n" + log.read_text())


def auth() -> dict[str, str]:
    return {"Authorization": f"token {TOKEN}"}


class Kernel:
    """A kernel of the running server, driven over its websocket as a browser would."""

    def __init__(self, url: str) -> None:
        answer = requests.post(url + "/api/kernels", headers=auth(), json={"name": "python3"}, timeout=60)
        answer.raise_for_status()
        self.session = uuid.uuid4().hex
        ws_url = "ws" + url[4:] + f"/api/kernels/{answer.json()['id']}/channels?session_id={self.session}"
        self.ws = websocket.create_connection(ws_url, header=[f"Authorization: token {TOKEN}"], timeout=300)

    def run(self, code: str) -> tuple[str, list[dict]]:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": self.session, "date": "",
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        text, errors, idle, replied = [], [], False, False
        while not (idle and replied):
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                text.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                text.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                errors.append(content)
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
            elif kind == "execute_reply":
                replied = True
        return "".join(text), errors
