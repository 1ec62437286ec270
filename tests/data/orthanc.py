"""A real Orthanc with its DICOMweb plugin for tests: loopback only, a tmp storage
directory, no authentication, no DICOM listener, stopped and reaped afterwards."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.harness import stop_process

PLUGIN_CANDIDATES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",)


@dataclass
class RunningOrthanc:
    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicom-web"

    def upload(self, path: Path) -> dict:
        answer = requests.post(self.url + "/instances", data=path.read_bytes(), timeout=30)
        answer.raise_for_status()
        return answer.json()

    def stop(self) -> None:
        stop_process(self.process)


def dicomweb_plugin() -> str:
    listed = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=False).stdout
    for line in listed.splitlines():
        if line.endswith(".so") and "DicomWeb" in line:
            return line
    for candidate in PLUGIN_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    raise RuntimeError("the orthanc-dicomweb plugin is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_orthanc(root: Path, timeout: float = 60) -> RunningOrthanc:
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "Name": "rapha-test-pacs", "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "storage"),
        "HttpPort": port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomServerEnabled": False, "DicomPort": free_port(), "ExecuteLuaEnabled": False,
        "Plugins": [dicomweb_plugin()], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    log_path = root / "orthanc.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([shutil.which("Orthanc") or "Orthanc", str(root / "orthanc.json")],
                                   stdout=log, stderr=subprocess.STDOUT, cwd=root)
    running = RunningOrthanc(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if requests.get(running.url + "/system", timeout=2).ok:
                return running
        except requests.RequestException:
            time.sleep(0.2)
    running.stop()
    raise RuntimeError("Orthanc did not start:\n" + log_path.read_text(errors="replace")[-3000:])
