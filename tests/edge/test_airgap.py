"""rapha-airgap (S1): every escape fails inside the sandbox; normal work still runs.

Network traffic here goes only to the host's 127.0.0.1 (listeners these tests start) or
to network namespaces these tests create. The outside-style address 192.0.2.1 appears
only in the probe, which sends nothing unless already sealed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_kernel.sandbox.airgap import (
    BUILT_BINARY, NOBODY, airgap_command, check_record, find_airgap_binary, host_namespaces, self_check,
)
from edge_kernel.sandbox.launch import exposed_paths
from edge_kernel.settings import SandboxSettings, Settings
from jupyter_rapha.protocol.errors import SandboxFault
from tests.harness import stop_process
from tests.processes import survivors, wait_for_descendants

root = pytest.mark.needs_root
PYTHON = sys.executable
LIMITS = dict(max_memory_bytes=16 << 30, max_cpu_seconds=120, max_wall_seconds=120,
              max_processes=4096, max_file_bytes=64 << 20)


@pytest.fixture(scope="session")
def airgap_binary() -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not BUILT_BINARY.is_file():
        cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
        if not Path(cargo).is_file():
            pytest.skip("rapha-airgap is not built and cargo is missing")
        subprocess.run([cargo, "build", "--release", "--offline"], cwd=BUILT_BINARY.parents[2], check=True)
    return BUILT_BINARY


class Edge:
    """A stand-in edge layout outside /tmp (the sandbox's /tmp is private anyway, so a
    secret under /tmp would prove nothing): keys/, state/edge.sqlite, state/jobs/JOB."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.keys = base / "keys"
        self.state = base / "state"
        self.job = self.state / "jobs" / "job-1"
        self.job.mkdir(parents=True)
        self.keys.mkdir()
        # World-readable on purpose: only the sandbox's hiding protects them here.
        (self.keys / "edge_ed25519.pem").write_text("SECRET-KEY")
        (self.state / "edge.sqlite").write_text("SECRET-DB")
        os.chown(self.job, NOBODY, NOBODY)
        self.hidden = [self.keys, self.state, Path("/run"), Path("/var/run"), Path("/root")]
        # The interpreter (and a checkout under /tmp, as in CI) may live under a covered
        # path; bind just them back, read-only, as the edge does.
        self.exposed = exposed_paths(self.hidden, extra=(BUILT_BINARY.resolve().parent,))

    def command(self, binary: Path, cmd: list[str], **overrides: object) -> list[str]:
        options = {**LIMITS, "hidden_paths": self.hidden, "exposed_paths": self.exposed, **overrides}
        return airgap_command(binary, cmd, workdir=self.job, **options)  # type: ignore[arg-type]

    def run(self, binary: Path, cmd: list[str], *, timeout: float = 60, pass_fds: tuple[int, ...] = (),
            **overrides: object) -> subprocess.CompletedProcess[str]:
        line = self.command(binary, cmd, **overrides)
        return subprocess.run(line, capture_output=True, text=True, timeout=timeout, pass_fds=pass_fds,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(self.job)})

    def python(self, binary: Path, code: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.run(binary, [PYTHON, "-c", textwrap.dedent(code)], **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def edge() -> Iterator[Edge]:
    base = Path(tempfile.mkdtemp(prefix="rapha-airgap-test-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    try:
        yield Edge(base)
    finally:
        shutil.rmtree(base)


@pytest.fixture
def tcp_listener() -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    yield server
    server.close()


def heard(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
    except TimeoutError:
        return False
    return True


def refused(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode != 0 and "PermissionError" in result.stderr and "Operation not permitted" in result.stderr


# --- evidence ---------------------------------------------------------------------------

@root
def test_self_check_record_says_sealed(airgap_binary: Path) -> None:
    evidence = self_check(airgap_binary)
    record = evidence["record"]
    assert len(evidence["sha256"]) == 64
    assert record["all_blocked"] is True and record["sealed"] is True
    assert all(p["outcome"] == "blocked: EPERM" for p in record["probes"].values())
    probes = {"tcp_outside", "udp_outside", "dns_host_resolver", "packet", "netlink_route", "raw_icmp"}
    assert probes <= set(record["probes"])
    assert record["uid"][0] == NOBODY and record["no_new_privs"] is True
    assert record["capabilities"]["CapEff"] == "0" * 16 and record["capabilities"]["CapBnd"] == "0" * 16
    digest = subprocess.run([airgap_binary, "digest"], capture_output=True, text=True, check=True).stdout.strip()
    assert record["seccomp"]["filter_sha256"] == digest


@root
def test_probe_outside_a_sandbox_does_not_pass(airgap_binary: Path) -> None:
    out = subprocess.run([airgap_binary, "probe", "--tcp-port", "9"], capture_output=True, text=True, check=True)
    record = json.loads(out.stdout)
    assert record["sealed"] is False
    assert record["probes"]["tcp_outside"]["outcome"] == "skipped: not sealed"
    with pytest.raises(SandboxFault):
        check_record(record, host_namespaces())


def test_self_check_rejects_open_or_malformed_records(tmp_path: Path) -> None:
    good = {"probes": {"tcp": {"blocked": True}}, "namespaces": {"net": 1, "mnt": 2, "pid": 3},
            "seccomp": {"mode": "2", "filter_sha256": "ab", "filter": "unix-only", "filter_matches": True},
            "uid": [NOBODY], "no_new_privs": True,
            "interfaces": ["lo"], "all_blocked": True}
    check_record(good, {"net": 10, "mnt": 20, "pid": 30})
    for broken in ({**good, "probes": {"tcp": {"blocked": False}}}, {**good, "probes": {}}, [],
                   {**good, "uid": [0]}, {**good, "seccomp": {"mode": "0"}}, {**good, "interfaces": ["lo", "eth0"]}):
        with pytest.raises(SandboxFault):
            check_record(broken, {"net": 10, "mnt": 20, "pid": 30})
    with pytest.raises(SandboxFault):  # same namespace as the host
        check_record(good, {"net": 1, "mnt": 20, "pid": 30})
    # the evidence must be of the filter variant the job runs under, and say it matched
    with pytest.raises(SandboxFault):
        check_record(good, {"net": 10, "mnt": 20, "pid": 30}, inet_loopback=True)
    for seccomp in ({**good["seccomp"], "filter_matches": False}, {**good["seccomp"], "filter": None}):
        with pytest.raises(SandboxFault):
            check_record({**good, "seccomp": seccomp}, {"net": 10, "mnt": 20, "pid": 30})
    distributed = {**good, "seccomp": {**good["seccomp"], "filter": "inet-loopback"}}
    check_record(distributed, {"net": 10, "mnt": 20, "pid": 30}, inet_loopback=True)
    for body in ("echo not-json", "echo '{\"probes\": {\"x\": {\"blocked\": false}}}'", "exit 3"):
        fake = tmp_path / "fake-airgap"
        fake.write_text(f"#!/bin/sh\n{body}\n")
        fake.chmod(0o755)
        with pytest.raises(SandboxFault):
            self_check(fake)


# --- network escapes --------------------------------------------------------------------

@root
def test_tcp_to_host_loopback_listener_fails(airgap_binary: Path, edge: Edge, tcp_listener: socket.socket) -> None:
    port = tcp_listener.getsockname()[1]
    result = edge.python(airgap_binary, f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)")
    assert refused(result), result.stderr
    assert not heard(tcp_listener)


@root
def test_udp_to_host_loopback_fails(airgap_binary: Path, edge: Edge) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(0.2)
        port = receiver.getsockname()[1]
        result = edge.python(airgap_binary, f"""
            import socket
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"leak", ("127.0.0.1", {port}))""")
        assert refused(result), result.stderr
        with pytest.raises((TimeoutError, socket.timeout)):
            receiver.recvfrom(64)


def dns_query(name: str) -> bytes:
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.split("."))
    return b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00\x00\x01\x00\x01"


@pytest.fixture
def resolver() -> Iterator[tuple[int, list[bytes]]]:
    """A tiny DNS resolver on 127.0.0.1 answering every A query with 127.0.0.9."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.1)
    queries: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                query, peer = server.recvfrom(512)
            except TimeoutError:
                continue
            queries.append(query)
            answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x7f\x00\x00\x09"
            server.sendto(query[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + query[12:] + answer, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], queries
    stop.set()
    thread.join()
    server.close()


@root
def test_dns_lookup_against_host_resolver_fails(airgap_binary: Path, edge: Edge,
                                                resolver: tuple[int, list[bytes]]) -> None:
    port, queries = resolver
    lookup = f"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
        s.sendto({dns_query('records.hospital.test')!r}, ("127.0.0.1", {port}))
        print(s.recvfrom(512)[0][-4:])"""
    control = subprocess.run([PYTHON, "-c", textwrap.dedent(lookup)], capture_output=True, text=True, timeout=10)
    assert control.returncode == 0 and len(queries) == 1  # the resolver answers outside
    result = edge.python(airgap_binary, lookup)
    assert refused(result), result.stderr
    assert len(queries) == 1


@root
@pytest.mark.parametrize("family, kind, proto", [
    ("AF_INET", "SOCK_RAW", "socket.IPPROTO_ICMP"),
    ("AF_PACKET", "SOCK_RAW", "0x0300"),
    ("AF_NETLINK", "SOCK_RAW", "0"),
    ("AF_INET6", "SOCK_STREAM", "0"),
])
def test_raw_packet_netlink_sockets_fail(airgap_binary: Path, edge: Edge, family: str, kind: str, proto: str) -> None:
    result = edge.python(airgap_binary, f"import socket; socket.socket(socket.{family}, socket.{kind}, {proto})")
    assert refused(result), result.stderr


@root
def test_unix_sockets_still_work(airgap_binary: Path, edge: Edge) -> None:
    result = edge.python(airgap_binary, """
        import socket
        a, b = socket.socketpair(); a.sendall(b"ok"); print(b.recv(2).decode())""")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@root
def test_subprocess_with_socket_fails(airgap_binary: Path, edge: Edge, tcp_listener: socket.socket) -> None:
    port = tcp_listener.getsockname()[1]
    inner = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    result = edge.python(airgap_binary, f"""
        import subprocess, sys
        done = subprocess.run([sys.executable, "-c", {inner!r}], capture_output=True, text=True)
        print(done.returncode); sys.stderr.write(done.stderr)""")
    assert result.stdout.strip() == "1" and "PermissionError" in result.stderr
    if shutil.which("curl"):
        curl = edge.run(airgap_binary, ["curl", "-sS", "--max-time", "2", f"http://127.0.0.1:{port}/"])
        assert curl.returncode != 0
    assert not heard(tcp_listener)


@root
def test_ctypes_raw_socket_syscall_fails(airgap_binary: Path, edge: Edge) -> None:
    result = edge.python(airgap_binary, """
        import ctypes, os, platform
        libc = ctypes.CDLL(None, use_errno=True)
        nr = {"x86_64": 41, "aarch64": 198}[platform.machine()]
        fd = libc.syscall(nr, 2, 1, 0)
        print(fd, os.strerror(ctypes.get_errno()))""")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "-1 Operation not permitted"


@root
def test_new_namespaces_and_ptrace_refused(airgap_binary: Path, edge: Edge) -> None:
    result = edge.python(airgap_binary, """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        for ret in (libc.unshare(0x50000000), libc.ptrace(0, 0, 0, 0)):  # NEWUSER|NEWNET; TRACEME
            print(ret, os.strerror(ctypes.get_errno()))""")
    assert result.stdout.splitlines() == ["-1 Operation not permitted"] * 2, result.stderr


# --- filesystem -------------------------------------------------------------------------

@root
def test_edge_keys_and_job_database_are_invisible(airgap_binary: Path, edge: Edge) -> None:
    read = f"""
        import sys
        for path in ({str(edge.keys / 'edge_ed25519.pem')!r}, {str(edge.state / 'edge.sqlite')!r}):
            try:
                print(open(path).read())
            except OSError as exc:
                print(type(exc).__name__)"""
    result = edge.python(airgap_binary, read)
    assert result.returncode == 0, result.stderr
    assert "SECRET" not in result.stdout and result.stdout.split() == ["FileNotFoundError"] * 2
    # Control: the same files, not hidden, are readable (they are world-readable here).
    control = edge.python(airgap_binary, read, hidden_paths=[Path("/root")])
    assert control.stdout.split() == ["SECRET-KEY", "SECRET-DB"], control.stderr


@root
def test_writes_only_reach_the_job_directory(airgap_binary: Path, edge: Edge) -> None:
    result = edge.python(airgap_binary, f"""
        import os
        open("out.txt", "w").write("weights")
        open("/tmp/scratch", "w").write("private")
        for path in ({str(edge.base / 'planted')!r}, "/etc/planted", "/var/tmp/planted", "/dev/shm/x"):
            try:
                open(path, "w").write("x"); print("wrote", path)
            except OSError as exc:
                print(type(exc).__name__)""")
    assert result.returncode == 0, result.stderr
    assert (edge.job / "out.txt").read_text() == "weights"
    assert not (edge.base / "planted").exists() and not Path("/etc/planted").exists()
    # Read-only everywhere but the job directory and the private /tmp and /dev/shm.
    assert result.stdout.splitlines() == ["OSError"] * 3 + ["wrote /dev/shm/x"]
    assert not Path("/tmp/scratch").exists()


@root
def test_only_named_fds_pass(airgap_binary: Path, edge: Edge) -> None:
    kept_r, kept_w = os.pipe()
    other_r, other_w = os.pipe()
    try:
        result = edge.python(airgap_binary, f"""
            import os
            os.write({kept_w}, b"hello")
            try:
                os.fstat({other_w}); print("leaked")
            except OSError:
                print("closed")""", keep_fds=[kept_w], pass_fds=(kept_w, other_w))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "closed"
        assert os.read(kept_r, 5) == b"hello"
    finally:
        for fd in (kept_r, kept_w, other_r, other_w):
            os.close(fd)


# --- ordinary work, status, limits ------------------------------------------------------

@root
def test_identity_and_privileges(airgap_binary: Path, edge: Edge) -> None:
    result = edge.python(airgap_binary, """
        import os
        status = dict(l.split(":", 1) for l in open("/proc/self/status"))
        print(os.getuid(), os.getgid(), os.getgroups(), status["CapEff"].strip(), status["NoNewPrivs"].strip(),
              status["Seccomp"].strip(), os.getcwd(), os.getppid())""")
    uid, gid, groups, capeff, nnp, seccomp, cwd, ppid = result.stdout.split()
    assert (int(uid), int(gid), groups) == (NOBODY, NOBODY, "[]")
    assert (capeff, nnp, seccomp, cwd, ppid) == ("0" * 16, "1", "2", str(edge.job), "1")


@root
def test_torch_training_with_threads_runs(airgap_binary: Path, edge: Edge) -> None:
    result = edge.python(airgap_binary, """
        import torch
        torch.set_num_threads(2)
        assert torch.ones(3).sum().item() == 3.0
        model = torch.nn.Linear(16, 1); opt = torch.optim.SGD(model.parameters(), lr=0.05)
        x = torch.randn(256, 16); y = x.sum(dim=1, keepdim=True)
        for _ in range(30):
            loss = ((model(x) - y) ** 2).mean(); opt.zero_grad(); loss.backward(); opt.step()
        print(torch.get_num_threads(), loss.item() < 10)""", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "True"]


@root
def test_exit_codes_and_signals_pass_through(airgap_binary: Path, edge: Edge) -> None:
    assert edge.python(airgap_binary, "raise SystemExit(7)").returncode == 7
    assert edge.run(airgap_binary, ["/bin/true"]).returncode == 0
    killed = edge.python(airgap_binary, "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert killed.returncode == 128 + signal.SIGSEGV
    assert "killed by signal 11 (SIGSEGV)" in killed.stderr
    missing = edge.run(airgap_binary, ["/nonexistent/tool"])
    assert missing.returncode == 127 and "cannot execute" in missing.stderr


@root
def test_stop_request_kills_the_whole_sandbox(airgap_binary: Path, edge: Edge) -> None:
    tree = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    line = edge.command(airgap_binary, [PYTHON, "-c", tree])
    proc = subprocess.Popen(line, stderr=subprocess.PIPE, text=True, env={"PATH": "/usr/bin:/bin"})
    try:
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    assert "stopped by signal 15" in proc.stderr.read()  # type: ignore[union-attr]


# The edge stand-in: starts the sandbox from a worker thread, as the edge does, with
# --parent-pid naming itself, then sleeps until the test kills it.
_STARTER = """
import json, os, subprocess, sys, threading, time
line = json.loads(sys.argv[1])
line[2:2] = ["--parent-pid", str(os.getpid())]
threading.Thread(target=lambda: subprocess.Popen(line).wait(), daemon=True).start()
time.sleep(120)
"""


@root
def test_the_sandbox_dies_with_the_process_that_started_it(airgap_binary: Path, edge: Edge) -> None:
    job = [PYTHON, "-c", "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"]
    line = edge.command(airgap_binary, job, die_with_caller=False)
    starter = subprocess.Popen([PYTHON, "-c", _STARTER, json.dumps([str(a) for a in line])],
                               env={"PATH": "/usr/bin:/bin"})
    try:
        # warden, init, the job's python and its sleep
        sandbox = wait_for_descendants(starter.pid, 4)
        os.kill(starter.pid, signal.SIGKILL)  # no cleanup runs in the starter
        starter.wait(timeout=10)
        assert survivors(sandbox) == set()
    finally:
        stop_process(starter)


@root
def test_a_sandbox_whose_starter_is_gone_runs_nothing(airgap_binary: Path, edge: Edge) -> None:
    marker = edge.job / "ran"
    line = edge.command(airgap_binary, ["/bin/touch", str(marker)], die_with_caller=False)
    # a live process that is not the sandbox's parent stands for a parent that died
    # between its fork and the parent-death signal being set (we were re-parented)
    line[2:2] = ["--parent-pid", str(os.getppid())]
    done = subprocess.run(line, capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 125 and "is gone; nothing ran" in done.stderr, done.stderr
    assert not marker.exists()
    assert "--parent-pid" in edge.command(airgap_binary, ["/bin/true"])


@root
def test_rlimits_apply(airgap_binary: Path, edge: Edge) -> None:
    memory = edge.python(airgap_binary, "bytearray(2 << 30)", max_memory_bytes=512 << 20)
    assert memory.returncode == 1 and "MemoryError" in memory.stderr
    size = edge.python(airgap_binary, "open('big', 'wb').write(b'0' * (2 << 20))", max_file_bytes=1 << 20)
    assert size.returncode == 1 and "File too large" in size.stderr
    cpu = edge.python(airgap_binary, "while True: pass", max_cpu_seconds=1, timeout=30)
    assert cpu.returncode == 128 + signal.SIGXCPU
    wall = edge.python(airgap_binary, "import time; time.sleep(30)", max_wall_seconds=1, timeout=30)
    assert wall.returncode == 124 and "wall-clock limit" in wall.stderr
    threads = edge.python(airgap_binary, """
        import threading, time
        for _ in range(64):
            threading.Thread(target=time.sleep, args=(2,), daemon=True).start()""", max_processes=8)
    assert threads.returncode == 1 and "can't start new thread" in threads.stderr


@root
def test_bad_requests_are_refused(airgap_binary: Path, edge: Edge) -> None:
    for args in (["--uid", "0"], ["--keep-fd", "987"], ["--workdir", "/nonexistent-job"]):
        done = subprocess.run([airgap_binary, "exec", *args, "--", "/bin/true"], capture_output=True, text=True)
        assert done.returncode in (2, 125), args
    assert subprocess.run([airgap_binary, "exec", "--"], capture_output=True).returncode == 2
    with pytest.raises(SandboxFault):
        edge.command(airgap_binary, ["x"], uid=0)
    with pytest.raises(SandboxFault):
        edge.command(airgap_binary, ["x"], max_wall_seconds=0)


# --- finding the binary -----------------------------------------------------------------

def settings_with(binary: str) -> Settings:
    return Settings(config_dir=Path("/nonexistent"), edge_id="test", sandbox=SandboxSettings(airgap_binary=binary))


def test_find_binary_refuses_missing_or_not_executable(tmp_path: Path) -> None:
    with pytest.raises(SandboxFault):
        find_airgap_binary(settings_with(str(tmp_path / "absent")))
    plain = tmp_path / "rapha-airgap"
    plain.write_text("#!/bin/sh\n")
    with pytest.raises(SandboxFault):
        find_airgap_binary(settings_with(str(plain)))
    plain.chmod(0o755)
    assert find_airgap_binary(settings_with(str(plain))) == plain.resolve()


def test_find_binary_default_is_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    if BUILT_BINARY.is_file():
        assert find_airgap_binary(settings_with("")) == BUILT_BINARY
    else:
        monkeypatch.setenv("PATH", "/nonexistent")
        with pytest.raises(SandboxFault):
            find_airgap_binary(settings_with(""))


# --- the appliance WAN gate, in network namespaces these tests create ------------------

class Appliance:
    """Three namespaces: the edge, a LAN peer and a WAN peer, joined by veth pairs.
    Addresses are 10.231.x.x and exist only inside these namespaces."""

    LAN_PEER = "10.231.1.2"
    WAN_PEER = "10.231.2.2"

    def __init__(self, tag: str) -> None:
        self.edge, self.lan, self.wan = (f"rapha-{tag}-{role}" for role in ("edge", "lan", "wan"))

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def build(self) -> None:
        for ns in (self.edge, self.lan, self.wan):
            self.ip("netns", "add", ns)
            self.ip("-n", ns, "link", "set", "lo", "up")
        for name, peer, subnet in (("lan0", self.lan, "1"), ("wan0", self.wan, "2")):
            self.ip("-n", self.edge, "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", peer)
            self.ip("-n", self.edge, "addr", "add", f"10.231.{subnet}.1/24", "dev", name)
            self.ip("-n", peer, "addr", "add", f"10.231.{subnet}.2/24", "dev", "eth0")
            self.ip("-n", self.edge, "link", "set", name, "up")
            self.ip("-n", peer, "link", "set", "eth0", "up")

    def destroy(self) -> None:
        for ns in (self.edge, self.lan, self.wan):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def serve(self, ns: str, address: str) -> subprocess.Popen[bytes]:
        code = (f"import socket; s = socket.create_server(('{address}', 8080)); print('up', flush=True)\n"
                "while True: s.accept()[0].close()")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, PYTHON, "-c", code], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"up"
        return proc

    def reaches(self, source: str, address: str) -> bool:
        code = f"import socket; socket.create_connection(('{address}', 8080), timeout=1).close()"
        return subprocess.run(["ip", "netns", "exec", source, PYTHON, "-c", code], capture_output=True).returncode == 0

    def gate(self, binary: Path, action: str, iface: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.edge, str(binary), action, "--wan", iface],
                              capture_output=True, text=True, timeout=30)


@pytest.fixture
def appliance() -> Iterator[Appliance]:
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nft"):
        pytest.skip("needs root, iproute2 and nftables")
    box = Appliance(f"{os.getpid() % 100000}")
    servers: list[subprocess.Popen[bytes]] = []
    try:
        box.build()
        servers = [box.serve(box.lan, box.LAN_PEER), box.serve(box.wan, box.WAN_PEER),
                   box.serve(box.edge, "10.231.2.1")]
        yield box
    finally:
        for server in servers:
            server.kill()
            server.wait()
        box.destroy()


@root
def test_wan_gate_severs_wan_keeps_lan_and_restores(airgap_binary: Path, appliance: Appliance) -> None:
    box = appliance
    assert box.reaches(box.edge, box.WAN_PEER) and box.reaches(box.edge, box.LAN_PEER)
    assert box.gate(airgap_binary, "status", "wan0").returncode == 1  # open

    severed = box.gate(airgap_binary, "sever", "wan0")
    assert severed.returncode == 0, severed.stderr
    assert '"state":"severed"' in box.gate(airgap_binary, "status", "wan0").stdout
    assert not box.reaches(box.edge, box.WAN_PEER)  # out through the WAN
    assert not box.reaches(box.wan, "10.231.2.1")  # in through the WAN
    assert box.reaches(box.edge, box.LAN_PEER)  # the LAN is unaffected

    restored = box.gate(airgap_binary, "restore", "wan0")
    assert restored.returncode == 0, restored.stderr
    assert box.gate(airgap_binary, "status", "wan0").returncode == 1
    assert box.reaches(box.edge, box.WAN_PEER) and box.reaches(box.wan, "10.231.2.1")


@root
def test_wan_gate_fails_closed(airgap_binary: Path, appliance: Appliance) -> None:
    box = appliance
    assert box.gate(airgap_binary, "sever", "wan0").returncode == 0
    failed = box.gate(airgap_binary, "restore", "nosuch0")
    assert failed.returncode == 1 and "left" in failed.stderr
    assert box.gate(airgap_binary, "status", "wan0").returncode == 0  # still severed
    assert not box.reaches(box.edge, box.WAN_PEER)
    assert box.gate(airgap_binary, "sever", "nosuch0").returncode == 1  # a misnamed WAN is an error


@root
@pytest.mark.parametrize("iface", ['wan0" accept; #', "wan0;flush ruleset", "", "a" * 16, "wan 0", "..", "wan0\n"])
def test_wan_gate_refuses_injection(airgap_binary: Path, appliance: Appliance, iface: str) -> None:
    box = appliance
    for action in ("sever", "restore", "status"):
        done = box.gate(airgap_binary, action, iface)
        assert done.returncode == 2 and "refused" in done.stderr
    listed = subprocess.run(["ip", "netns", "exec", box.edge, "nft", "list", "ruleset"], capture_output=True, text=True)
    assert "rapha_airgap" not in listed.stdout
