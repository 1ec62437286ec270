"""rapha-airgap's distributed mode (``exec --allow-inet-loopback``): TCP and UDP sockets
for a rendezvous on the job's own loopback, and still no way out (S1).

Traffic goes only to the host's 127.0.0.1 (listeners these tests start) and to the
sandbox's own loopback; the probe's outside address is never routed.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from edge_kernel.gates.airgap import AirgapGate
from edge_kernel.gates.pipeline import GateContext
from edge_kernel.sandbox.airgap import self_check
from edge_kernel.settings import load_settings
from jupyter_rapha.protocol.jobspec import parse_jobspec
from tests.edge import test_airgap as base
from tests.edge.test_airgap import Edge, heard, refused, root
from tests.harness import init_edge
from tests.protocol.test_jobspec import spec_dict

# the same fixtures as the air-gap's own tests: its binary, a stand-in edge layout, a host listener
airgap_binary, edge, tcp_listener = base.airgap_binary, base.edge, base.tcp_listener

RENDEZVOUS = """
import os, socket
server = socket.create_server(("127.0.0.1", 29500))
if os.fork() == 0:
    with socket.create_connection(("127.0.0.1", 29500), timeout=5) as peer:
        peer.sendall(b"rank-1")
    os._exit(0)
conn, _ = server.accept()
print(conn.recv(16).decode())
"""


@root
def test_the_probe_in_distributed_mode_hears_nothing_on_the_host(airgap_binary: Path) -> None:
    evidence = self_check(airgap_binary, inet_loopback=True)  # host listeners on 127.0.0.1 hear nothing
    record = evidence["record"]
    assert record["all_blocked"] is True and record["sealed"] is True and record["interfaces"] == ["lo"]
    assert record["af_inet"] == "open: socket created" and record["seccomp"]["filter"] == "inet-loopback"
    probes = record["probes"]
    # The sockets exist now, so each refusal is the namespace's, not the filter's.
    assert probes["tcp_host_loopback"]["outcome"].endswith("ECONNREFUSED")
    assert probes["tcp6_host_loopback"]["outcome"].endswith("ECONNREFUSED")
    for name in ("udp_host_loopback", "dns_host_resolver"):
        assert "own loopback" in probes[name]["outcome"], probes[name]
    assert probes["tcp_outside"]["outcome"].endswith("ENETUNREACH")
    assert probes["udp_outside"]["outcome"].endswith("ENETUNREACH")
    assert probes["netlink_route"]["outcome"] == "blocked: socket created, changes refused with EPERM"
    for name in ("raw_icmp", "raw_icmp6", "icmp_datagram", "packet", "netlink_sock_diag", "io_uring", "unshare_net"):
        assert probes[name]["outcome"] == "blocked: EPERM", name
    digest = subprocess.run([airgap_binary, "digest", "--allow-inet-loopback"], capture_output=True, text=True,
                            check=True).stdout.strip()
    default = subprocess.run([airgap_binary, "digest"], capture_output=True, text=True, check=True).stdout.strip()
    assert record["seccomp"]["filter_sha256"] == digest != default


@root
def test_without_the_flag_inet_sockets_stay_refused(airgap_binary: Path, edge: Edge) -> None:
    result = edge.python(airgap_binary, RENDEZVOUS)
    assert refused(result), result.stderr
    record = self_check(airgap_binary)["record"]
    assert record["seccomp"]["filter"] == "unix-only" and record["af_inet"] == "blocked: EPERM"


@root
def test_with_the_flag_processes_meet_on_the_sandbox_loopback_only(airgap_binary: Path, edge: Edge,
                                                                   tcp_listener: socket.socket) -> None:
    result = edge.python(airgap_binary, RENDEZVOUS, allow_inet_loopback=True)
    assert result.returncode == 0 and result.stdout.strip() == "rank-1", result.stderr
    port = tcp_listener.getsockname()[1]
    reach_host = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    result = edge.python(airgap_binary, reach_host, allow_inet_loopback=True)
    assert result.returncode != 0 and "ConnectionRefusedError" in result.stderr, result.stderr
    assert not heard(tcp_listener)
    raw = "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)"
    assert refused(edge.python(airgap_binary, raw, allow_inet_loopback=True))
    hostname = edge.python(airgap_binary, "import socket; print(socket.gethostname())", allow_inet_loopback=True)
    assert hostname.stdout.strip() == "localhost"


@root
def test_the_gate_takes_a_distributed_jobs_evidence_under_its_filter(airgap_binary: Path, tmp_path: Path) -> None:
    init_edge(tmp_path / "edge", records=4)
    settings = load_settings(tmp_path / "edge")
    for processes, variant in ((1, "unix-only"), (2, "inet-loopback")):
        ctx = GateContext(parse_jobspec(spec_dict(processes=processes)), "r" * 64, None, None, settings)
        result = AirgapGate().check(ctx)
        assert result.outcome == "pass", result.reasons
        assert result.evidence["socket_filter"] == variant == result.evidence["probe"]["seccomp"]["filter"]
