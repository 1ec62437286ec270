"""The appliance WAN gate, end to end: an edge served inside a network namespace this test
creates, with a LAN veth to the host side and a WAN veth to a peer namespace. Addresses
are 10.232.x.x and exist only inside these namespaces and their veth pairs.

WAN traffic is blocked while a job runs, the LAN is not, and the WAN is open again after;
a failed restore halts the edge until an operator resumes it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jupyter_rapha.client import EdgeClient, make_jobspec
from jupyter_rapha.protocol.errors import GateDenied
from tests.harness import init_edge, stop_process

AIRGAP = Path(__file__).resolve().parents[2] / "rust" / "airgap" / "target" / "release" / "rapha-airgap"
pytestmark = [pytest.mark.needs_root, pytest.mark.slow,
              pytest.mark.skipif(not (AIRGAP.exists() and shutil.which("ip") and shutil.which("nft")),
                                 reason="needs rapha-airgap, iproute2 and nftables")]
PY = sys.executable
EDGE_LAN, HOST_LAN, WAN_PEER = "10.232.7.2", "10.232.7.1", "10.232.8.2"
SLEEPY_CELL = "import time\nimport torch\ntime.sleep(6)\nrapha.log(done=1)\nrapha.save({'w': torch.zeros(2)})\n"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Appliance:
    def __init__(self) -> None:
        tag = os.getpid() % 10000
        self.edge_ns, self.wan_ns, self.host_if = f"rapha-e{tag}", f"rapha-w{tag}", f"rlan{tag}"

    def build(self) -> None:
        for ns in (self.edge_ns, self.wan_ns):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", self.host_if, "type", "veth", "peer", "name", "lan0", "netns", self.edge_ns)
        ip("addr", "add", f"{HOST_LAN}/24", "dev", self.host_if)
        ip("link", "set", self.host_if, "up")
        ip("-n", self.edge_ns, "addr", "add", f"{EDGE_LAN}/24", "dev", "lan0")
        ip("-n", self.edge_ns, "link", "set", "lan0", "up")
        ip("-n", self.edge_ns, "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", self.wan_ns)
        ip("-n", self.edge_ns, "addr", "add", "10.232.8.1/24", "dev", "wan0")
        ip("-n", self.wan_ns, "addr", "add", f"{WAN_PEER}/24", "dev", "eth0")
        ip("-n", self.edge_ns, "link", "set", "wan0", "up")
        ip("-n", self.wan_ns, "link", "set", "eth0", "up")

    def destroy(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        for ns in (self.edge_ns, self.wan_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def in_edge(self, *cmd: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.edge_ns, *cmd], capture_output=True, text=True, **kwargs)

    def wan_reachable(self) -> bool:
        code = f"import socket; socket.create_connection(('{WAN_PEER}', 8080), timeout=1).close()"
        return self.in_edge(PY, "-c", code, timeout=20).returncode == 0


@pytest.fixture
def appliance(tmp_path):
    box = Appliance()
    processes: list[subprocess.Popen] = []
    try:
        box.build()
        listener = (f"import socket; s = socket.create_server(('{WAN_PEER}', 8080)); print('up', flush=True)\n"
                    "while True: s.accept()[0].close()")
        peer = subprocess.Popen(["ip", "netns", "exec", box.wan_ns, PY, "-c", listener], stdout=subprocess.PIPE)
        processes.append(peer)
        assert peer.stdout.readline().strip() == b"up"
        root = tmp_path / "edge"
        key = init_edge(root, records=32)
        toml = (root / "edge.toml").read_text().replace('[sandbox]\n', '[sandbox]\nwan_interface = "wan0"\n')
        (root / "edge.toml").write_text(toml)
        log = open(tmp_path / "serve.log", "w")
        edge = subprocess.Popen(["ip", "netns", "exec", box.edge_ns, PY, "-m", "edge_kernel.cli", "serve",
                                 "--config", str(root), "--host", EDGE_LAN, "--port", "0"],
                                stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        processes.append(edge)
        url = _wait_for_url(tmp_path / "serve.log", edge)
        yield box, EdgeClient(url, key), root, key
    finally:
        for process in processes:
            stop_process(process)
        box.destroy()


def _wait_for_url(log: Path, process: subprocess.Popen) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(r"serving on (http://[\d.]+:\d+)", log.read_text())
        if match:
            return match.group(1)
        assert process.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError("edge did not start: " + log.read_text())


def submit(client, key, code=SLEEPY_CELL):
    return client.submit(make_jobspec(code, "synthetic-cxr", ["image"], 4, 120, {}, key.key_id))


def wait_for_state(client, job_id, state, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.status(job_id)  # LAN traffic: must keep working throughout
        if status["state"] == state:
            return status
        time.sleep(0.2)
    raise AssertionError(f"job never reached {state}: {client.status(job_id)}")


def test_wan_blocked_during_a_job_lan_unaffected_restored_after(appliance):
    box, client, _, key = appliance
    assert box.wan_reachable()
    job_id = submit(client, key)
    wait_for_state(client, job_id, "running")
    time.sleep(1)
    assert not box.wan_reachable(), "WAN must be severed while the job runs"
    assert client.status(job_id)["state"] == "running"  # the LAN still answers
    status = client.wait(job_id, timeout=120)
    assert status["state"] == "completed", status
    assert box.wan_reachable(), "WAN must be restored after the job"
    assert box.in_edge(str(AIRGAP), "status", "--wan", "wan0").returncode == 1  # open


def test_failed_restore_halts_the_edge_until_an_operator_resumes(appliance):
    box, client, root, key = appliance
    job_id = submit(client, key)
    wait_for_state(client, job_id, "running")
    time.sleep(1)
    # Pull the interface away under the running job: restore cannot check it and must fail closed.
    ip("-n", box.edge_ns, "link", "set", "wan0", "name", "gone0")
    client.wait(job_id, timeout=120)
    with pytest.raises(GateDenied) as refused:
        submit(client, key)
    assert "halted" in refused.value.diagnostics()
    ip("-n", box.edge_ns, "link", "set", "gone0", "name", "wan0")
    assert not box.wan_reachable(), "the WAN stays severed after a failed restore"
    resumed = box.in_edge(PY, "-m", "edge_kernel.cli", "wan", "resume", "--config", str(root), timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert box.wan_reachable()
    assert client.wait(submit(client, key), timeout=120)["state"] == "completed"
