"""What a new user meets after `make setup`: the jupyter_rapha server extension is enabled
by the installed configuration alone, with no user or test configuration to help.

A scratch venv stands in for the one `make setup` leaves (it sees this environment's
packages, so nothing is downloaded); the Makefile rule that `make setup` runs enables the
extension in it; `jupyter server extension list` and a real `jupyter server` are then run
with a clean HOME and JUPYTER_CONFIG_DIR. A wheel (a normal `pip install`) carries the
same file as data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
import requests

from jupyter_rapha.protocol.keys import PrivateKey
from tests.harness import stop_process

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "etc/jupyter/jupyter_server_config.d/jupyter_rapha.json"
pytestmark = pytest.mark.slow


def scratch_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(path), "platbase": str(path)}))
    (site / "overlay.pth").write_text(f"import site; site.addsitedir({sysconfig.get_path('purelib')!r})\n")
    (path / ".installed").touch()  # what `make setup` leaves once the packages are in
    return path / "bin" / "python"


def clean_env(home: Path, key: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    home.mkdir()
    return {**env, "HOME": str(home), "JUPYTER_CONFIG_DIR": str(home / ".jupyter"),
            "JUPYTER_DATA_DIR": str(home / "data"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "PYTHONPATH": str(ROOT), "RAPHA_KEY": str(key)}


def extension_list(python: Path, env: dict[str, str]) -> str:
    done = subprocess.run([str(python), "-m", "jupyter_server.extension.serverextension", "list"],
                          env=env, capture_output=True, text=True, timeout=120)
    return re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)  # without its colours


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_edges(python: Path, env: dict[str, str], tmp_path: Path) -> requests.Response:
    port, token = free_port(), "new-user-token"
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([str(python), "-m", "jupyter_server", f"--ServerApp.port={port}",
                               "--ServerApp.ip=127.0.0.1", "--ServerApp.open_browser=False", "--allow-root",
                               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and server.poll() is None:
            try:
                requests.get(url + "/api/status", params={"token": token}, timeout=5)
                return requests.get(url + "/rapha/api/edges", params={"token": token}, timeout=30)
            except requests.ConnectionError:
                time.sleep(0.3)
        raise AssertionError("jupyter server did not start:\n" + (tmp_path / "server.log").read_text())
    finally:
        stop_process(server)


def test_make_setup_enables_the_server_extension(tmp_path):
    python = scratch_venv(tmp_path / "venv")
    key = tmp_path / "researcher.pem"
    key.write_bytes(PrivateKey.generate().to_pem())
    key.chmod(0o600)
    env = clean_env(tmp_path / "home", key)
    assert "jupyter_rapha" not in extension_list(python, env)  # nothing else enables it
    subprocess.run(["make", "-s", "-C", str(ROOT), f"VENV={tmp_path / 'venv'}", "jupyter-config"], check=True)
    assert json.loads((tmp_path / "venv" / CONFIG).read_text()) == {
        "ServerApp": {"jpserver_extensions": {"jupyter_rapha": True}}}
    listed = extension_list(python, env)
    assert "jupyter_rapha enabled" in listed and "jupyter_rapha 0.1.0 OK" in listed, listed
    answer = serve_edges(python, env, tmp_path)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"edges": []}  # the extension's own answer (no edges configured), not a 404


def test_a_wheel_enables_the_server_extension(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("jupyter_rapha", "edge_kernel", "jupyter-config"):
        shutil.copytree(ROOT / name, source / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "labextension"))
    build = f"from setuptools import build_meta; print(build_meta.build_wheel({str(tmp_path)!r}))"
    done = subprocess.run([sys.executable, "-c", build], cwd=source, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    wheel = tmp_path / done.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as archive:
        config = json.loads(archive.read(f"jupyter_rapha-0.1.0.data/data/{CONFIG}"))
    assert config == {"ServerApp": {"jpserver_extensions": {"jupyter_rapha": True}}}
