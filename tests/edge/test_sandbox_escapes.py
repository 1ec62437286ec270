"""S1 through the real job path: cells that try each way out, run by run_job under
rapha-airgap with an edge's real layout. Each must fail, with the job's record saying
why (its error type and line), and no listener on the host may hear anything.

The scan gate would refuse most of these cells before they ran; here they go straight to
the runner, because the sandbox must hold for a cell the scanner missed."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

import edge_kernel

from edge_kernel.data.registry import DatasetRegistry
from edge_kernel.sandbox.runner import run_job
from edge_kernel.settings import load_settings
from jupyter_rapha.client import make_jobspec
from tests.harness import init_edge

AIRGAP = Path(__file__).resolve().parents[2] / "rust" / "airgap" / "target" / "release" / "rapha-airgap"
PLANTED = Path(edge_kernel.__file__).resolve().parent / "planted.py"
pytestmark = [pytest.mark.needs_root, pytest.mark.slow,
              pytest.mark.skipif(not AIRGAP.exists(), reason="rapha-airgap is not built (make airgap)")]


class Listeners:
    """A TCP listener, a UDP socket and a stand-in DNS resolver on the host's loopback."""

    def __init__(self) -> None:
        self.heard: list[str] = []
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.dns.bind(("127.0.0.1", 0))
        for sock in (self.tcp, self.udp, self.dns):
            sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
                conn.close()
                self.heard.append("tcp")
            except OSError:
                pass
            for name, sock in (("udp", self.udp), ("dns", self.dns)):
                try:
                    sock.recvfrom(2048)
                    self.heard.append(name)
                except OSError:
                    pass

    def close(self) -> list[str]:
        self._stop.set()
        self._thread.join()
        for sock in (self.tcp, self.udp, self.dns):
            sock.close()
        return self.heard


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    root = tmp_path_factory.mktemp("escapes") / "edge"
    init_edge(root, records=8)
    settings = load_settings(root)
    dataset = DatasetRegistry(root).get("synthetic-cxr")
    return settings, dataset, DatasetRegistry(root).resolve(dataset)


@pytest.fixture(scope="module")
def listeners():
    ears = Listeners()
    yield ears
    assert ears.close() == [], "something reached a host listener from inside the sandbox"


DNS_QUERY = ("b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00"
             "\\x07example\\x03com\\x00\\x00\\x01\\x00\\x01'")


def escapes(listeners: Listeners, settings) -> list[tuple[str, str, str]]:
    tcp = listeners.tcp.getsockname()[1]
    udp = listeners.udp.getsockname()[1]
    dns = listeners.dns.getsockname()[1]
    keys = settings.keys_dir / "edge_ed25519.pem"
    db = settings.db_path
    return [
        ("tcp to host loopback", f"import socket\nsocket.create_connection(('127.0.0.1', {tcp}), timeout=2)\n",
         "PermissionError"),
        ("dns to a host resolver", f"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
         f"s.sendto({DNS_QUERY}, ('127.0.0.1', {dns}))\n", "PermissionError"),
        ("name lookup", "import socket\nsocket.getaddrinfo('example.com', 443)\n", "gaierror"),
        ("udp to host loopback", f"import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
         f".sendto(b'x', ('127.0.0.1', {udp}))\n", "PermissionError"),
        ("raw socket", "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n",
         "PermissionError"),
        ("packet socket", "import socket\nsocket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)\n", "PermissionError"),
        ("netlink", "import socket\nsocket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)\n", "PermissionError"),
        ("read the edge key", f"open({str(keys)!r}).read()\n", "FileNotFoundError"),
        ("read the job database", f"open({str(db)!r}, 'rb').read()\n", "FileNotFoundError"),
        # The decoded records and the dataset index the broker keeps (made before the job starts).
        ("list the record cache", f"import os\nos.listdir({str(settings.cache_dir)!r})\n", "FileNotFoundError"),
        # The edge's own code: visible to the job (read-only), the juiciest place to plant code.
        ("write outside the job dir", f"open({str(PLANTED)!r}, 'w').write('x')\n", "OSError"),
        # A failed child is reported by the cell as PermissionError, so the record tells it
        # apart from the child not starting at all (FileNotFoundError).
        ("curl in a subprocess", f"import subprocess\nr = subprocess.run(['curl', '-sS', '-m', '3', "
         f"'http://127.0.0.1:{tcp}/'])\nif r.returncode:\n    raise PermissionError(r.returncode)\n",
         "PermissionError"),
        ("python -c with a socket", f"import subprocess, sys\nr = subprocess.run([sys.executable, '-c', "
         f"\"import socket; socket.create_connection(('127.0.0.1', {tcp}))\"])\nif r.returncode:\n"
         "    raise PermissionError(r.returncode)\n", "PermissionError"),
        ("ctypes syscall socket()", "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
         "fd = libc.syscall(41, 2, 1, 0)\nif fd < 0:\n    raise PermissionError(ctypes.get_errno(), 'socket')\n",
         "PermissionError"),
    ]




@pytest.mark.parametrize("index", range(14))
def test_escape_fails_and_the_record_says_why(edge, listeners, tmp_path, index):
    settings, dataset, folder = edge
    name, cell, expected = escapes(listeners, settings)[index]
    code = cell + "rapha.log(escaped=1)\n"
    spec = make_jobspec(code, dataset.name, ["image"], 4, 60, {}, "b" * 32)
    workdir = settings.jobs_dir / spec.job_id / "work"
    outcome = run_job(spec, dataset, folder, ["image"], b"k" * 32, workdir, settings)
    assert outcome.status == "failed", (name, outcome)
    assert outcome.error is not None and outcome.error["type"] in (expected, "OSError"), (name, outcome.error)
    assert outcome.error["line"] is not None and outcome.error["line"] <= cell.count("\n"), name
    assert not PLANTED.exists()
    if name == "list the record cache":  # there on the host, hidden from the job
        assert any(settings.cache_dir.iterdir())


def test_a_torch_training_cell_with_threads_still_runs(edge, tmp_path):
    settings, dataset, folder = edge
    code = ("import torch\ntorch.set_num_threads(2)\nm = torch.nn.Linear(32 * 32, 2)\n"
            "o = torch.optim.SGD(m.parameters(), lr=0.1)\nfor b in rapha.loader(batch_size=4):\n"
            "    l = torch.nn.functional.cross_entropy(m(b['image'].flatten(1)), b['finding'])\n"
            "    o.zero_grad(); l.backward(); o.step()\nrapha.log(threads=torch.get_num_threads())\nrapha.save(m)\n")
    spec = make_jobspec(code, dataset.name, ["image", "finding"], 8, 120, {}, "b" * 32)
    outcome = run_job(spec, dataset, folder, ["image", "finding"], b"k" * 32,
                      settings.jobs_dir / spec.job_id / "work", settings)
    assert outcome.status == "completed", outcome
    assert outcome.metrics["threads"] == [2.0] and outcome.meter.records_used == 8
