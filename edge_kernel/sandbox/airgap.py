"""The seam between the runner and ``rapha-airgap`` (S1).

Three things: finding the binary (a missing or non-executable one denies the job, S4),
building the ``rapha-airgap exec`` command line for a job, and the self-check: the
binary's ``probe`` run inside a sandbox built like a job's, whose JSON record (and its
sha256) is the air-gap evidence that goes into the policy input and the receipt.

The self-check starts its own TCP and UDP listeners on the host's 127.0.0.1 and points
the probe at them; it fails if the record says any way out was open, if anything arrived
at a listener, or if the record is not what a sealed sandbox reports.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jupyter_rapha.protocol.errors import SandboxFault

from ..settings import Settings

BINARY_NAME = "rapha-airgap"
NOBODY = 65534
REPO_ROOT = Path(__file__).resolve().parents[2]
BUILT_BINARY = REPO_ROOT / "rust" / "airgap" / "target" / "release" / BINARY_NAME
NAMESPACES = ("net", "mnt", "pid")
# What rapha-airgap --private-dev puts in every job's /dev (rust/airgap/src/devices.rs).
STANDARD_DEV = frozenset({"fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout", "urandom", "zero"})
SELF_CHECK_SECONDS = 30


def _usable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_airgap_binary(settings: Settings) -> Path:
    """The configured binary, else the one built in this checkout, else one on PATH."""
    configured = settings.sandbox.airgap_binary
    if configured:
        # A configured path that is wrong is an error, not a hint to look elsewhere:
        # falling back could run a binary the hospital did not choose.
        path = Path(configured)
        if not _usable(path):
            raise SandboxFault("the configured air-gap binary is missing or not executable",
                               hint="check sandbox.airgap_binary in edge.toml")
        return path.resolve()
    if _usable(BUILT_BINARY):
        return BUILT_BINARY
    found = shutil.which(BINARY_NAME)
    if found and _usable(Path(found)):
        return Path(found).resolve()
    raise SandboxFault("the air-gap binary rapha-airgap was not found; jobs cannot run sealed",
                       hint="build it with 'make' (cargo build --release --offline in rust/airgap)")


def _positive(name: str, value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SandboxFault(f"air-gap limit {name} must be a positive integer")
    return str(value)


def airgap_command(
    binary: Path,
    cmd: Sequence[str],
    *,
    workdir: Path,
    keep_fds: Sequence[int] = (),
    max_memory_bytes: int,
    max_cpu_seconds: int,
    max_wall_seconds: int,
    max_processes: int,
    max_file_bytes: int,
    uid: int = NOBODY,
    gid: int = NOBODY,
    hidden_paths: Sequence[Path] = (),
    exposed_paths: Sequence[Path] = (),
    die_with_caller: bool = True,
    private_dev: bool = False,
    device_options: Sequence[str] = (),
    allow_inet_loopback: bool = False,
) -> list[str]:
    """``rapha-airgap exec [limits] ... -- cmd``. The job directory must be writable by
    ``uid``; every hidden path must be absolute.

    With ``die_with_caller`` the sandbox is killed when this process dies (a job must
    never outlive the edge); the command must then be started by this very process, from
    a thread that lives as long as the job (the parent-death signal follows the thread).

    ``private_dev``: a /dev of the job's own with the standard nodes only, so that no device
    of the host is in view (its GPUs included); ``device_options``: a GPU grant's
    ``--dev-bind``/``--ro-bind`` (``gpus.GpuGrant``), which implies it.

    ``allow_inet_loopback``: the seccomp variant of a distributed job, whose ranks meet
    over TCP on the job's own loopback (the namespace stays empty of anything else)."""
    if not cmd:
        raise SandboxFault("no job command to run under the air-gap")
    if uid == 0 or gid == 0:
        raise SandboxFault("the sandbox must not run jobs as root")
    line = [str(binary), "exec",
            "--max-memory", _positive("max_memory_bytes", max_memory_bytes),
            "--max-cpu", _positive("max_cpu_seconds", max_cpu_seconds),
            "--max-wall", _positive("max_wall_seconds", max_wall_seconds),
            "--max-processes", _positive("max_processes", max_processes),
            "--max-file-size", _positive("max_file_bytes", max_file_bytes),
            "--uid", _positive("uid", uid), "--gid", _positive("gid", gid),
            "--workdir", str(Path(workdir).resolve())]
    if die_with_caller:
        line += ["--parent-pid", str(os.getpid())]
    if allow_inet_loopback:
        line.append("--allow-inet-loopback")
    for fd in keep_fds:
        line += ["--keep-fd", str(int(fd))]
    for flag, paths in (("--hide", hidden_paths), ("--expose", exposed_paths)):
        for path in paths:
            if not Path(path).is_absolute():
                raise SandboxFault(f"air-gap {flag} needs an absolute path")
            line += [flag, str(path)]
    if private_dev or device_options:
        line += ["--private-dev", *device_options]
    return line + ["--", *cmd]


class _Listeners:
    """Host-side TCP and UDP listeners on 127.0.0.1 that must hear nothing."""

    def __init__(self) -> None:
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(4)
        self.tcp.setblocking(False)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.setblocking(False)

    def ports(self) -> list[str]:
        tcp, udp = str(self.tcp.getsockname()[1]), str(self.udp.getsockname()[1])
        return ["--tcp-port", tcp, "--udp-port", udp, "--dns-port", udp]

    def heard_anything(self) -> bool:
        for attempt in (self.tcp.accept, lambda: self.udp.recvfrom(512)):
            try:
                attempt()
            except BlockingIOError:
                continue
            return True
        return False

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


def host_namespaces() -> dict[str, int]:
    return {kind: os.stat(f"/proc/self/ns/{kind}").st_ino for kind in NAMESPACES}


def check_record(record: Any, host: dict[str, int], inet_loopback: bool = False) -> None:
    """Raise SandboxFault unless the probe record describes a sealed sandbox, with the
    seccomp variant asked for (``inet_loopback``: a distributed job's)."""
    if not isinstance(record, dict) or not isinstance(record.get("probes"), dict) or not record["probes"]:
        raise SandboxFault("air-gap self-check: malformed probe record")
    opened = sorted(name for name, probe in record["probes"].items()
                    if not isinstance(probe, dict) or probe.get("blocked") is not True)
    if opened:
        raise SandboxFault("air-gap self-check: a way out was open", hint=", ".join(opened))
    namespaces = record.get("namespaces")
    if not isinstance(namespaces, dict) or any(namespaces.get(k) in (None, host[k]) for k in NAMESPACES):
        raise SandboxFault("air-gap self-check: the job shares a namespace with the edge")
    seccomp = record.get("seccomp")
    if not isinstance(seccomp, dict) or seccomp.get("mode") != "2" or not seccomp.get("filter_sha256"):
        raise SandboxFault("air-gap self-check: no seccomp filter is active")
    if seccomp.get("filter") != socket_filter_name(inet_loopback) or seccomp.get("filter_matches") is not True:
        raise SandboxFault("air-gap self-check: the seccomp filter is not the variant the job runs under")
    uid = record.get("uid")
    if record.get("no_new_privs") is not True or not isinstance(uid, list) or not uid or 0 in uid:
        raise SandboxFault("air-gap self-check: the job is not unprivileged")
    if record.get("interfaces") != ["lo"] or record.get("all_blocked") is not True:
        raise SandboxFault("air-gap self-check: the job's network is not loopback only")


def socket_filter_name(inet_loopback: bool) -> str:
    """The probe record's name of the seccomp variant (``seccomp.filter``)."""
    return "inet-loopback" if inet_loopback else "unix-only"


def self_check(binary: Path, *, hidden_paths: Sequence[Path] = (),
               exposed_paths: Sequence[Path] = (), device_options: Sequence[str] = (),
               inet_loopback: bool = False) -> dict[str, Any]:
    """Run ``rapha-airgap probe`` inside a sandbox; return ``{"record", "sha256"}``.
    ``device_options``: the job's GPU binds, so that the probe runs with the devices in view.
    ``inet_loopback``: built as a distributed job's, AF_INET allowed; the host listeners
    must hear nothing all the same (the host's 127.0.0.1 is another namespace's).

    ``sha256`` is over the exact bytes the probe printed, so the receipt can commit to
    the record as produced.
    """
    # The probe runs inside: bind its folder back if the sandbox would cover it (a build
    # under /tmp or under a hidden path).
    probe_dir = binary.resolve().parent
    covers = [*(Path(p) for p in hidden_paths), Path("/tmp").resolve(), Path("/dev/shm")]
    if any(probe_dir.is_relative_to(c) for c in covers) and probe_dir not in exposed_paths:
        exposed_paths = [*exposed_paths, probe_dir]
    listeners = _Listeners()
    try:
        with tempfile.TemporaryDirectory(prefix="rapha-airgap-check-") as workdir:
            os.chmod(workdir, 0o755)
            mode = ["--inet-loopback"] if inet_loopback else []
            cmd = airgap_command(binary, [str(binary), "probe", *listeners.ports(), *mode], workdir=Path(workdir),
                                 max_memory_bytes=1 << 30, max_cpu_seconds=SELF_CHECK_SECONDS,
                                 max_wall_seconds=SELF_CHECK_SECONDS, max_processes=4096,
                                 max_file_bytes=1 << 20, hidden_paths=hidden_paths,
                                 exposed_paths=exposed_paths, private_dev=True, device_options=device_options,
                                 allow_inet_loopback=inet_loopback)
            output = _run_probe(cmd)
        heard = listeners.heard_anything()
    finally:
        listeners.close()
    if heard:
        raise SandboxFault("air-gap self-check: a host listener received traffic from the sandbox")
    try:
        record = json.loads(output)
    except ValueError as exc:
        raise SandboxFault("air-gap self-check: the probe record is not JSON") from exc
    check_record(record, host_namespaces(), inet_loopback)
    check_devices(record, device_options)
    return {"record": record, "sha256": hashlib.sha256(output).hexdigest()}


def check_devices(record: dict[str, Any], device_options: Sequence[str]) -> None:
    """The probe's /dev holds the standard nodes and the granted devices, nothing else: a
    host device in view (a GPU not granted, a disk) or a granted one missing denies. The
    names stay out of the message (they describe the hospital's machine)."""
    granted = {Path(device_options[i + 1]).name for i, flag in enumerate(device_options[:-1]) if flag == "--dev-bind"}
    seen = record.get("dev")
    if not isinstance(seen, list) or not all(isinstance(name, str) for name in seen):
        raise SandboxFault("air-gap self-check: the probe record does not list the job's /dev")
    if set(seen) - STANDARD_DEV - granted:
        raise SandboxFault("air-gap self-check: the job's /dev holds a device it was not granted")
    if granted - set(seen):
        raise SandboxFault("air-gap self-check: a granted device is missing from the job's /dev")


def _run_probe(cmd: list[str]) -> bytes:
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=SELF_CHECK_SECONDS + 10, check=False,
                              env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxFault("air-gap self-check could not run", hint=type(exc).__name__) from exc
    if done.returncode != 0:
        # The binary's stderr names the failing step; it carries no record data.
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise SandboxFault(f"air-gap self-check failed (exit {done.returncode})", hint=reason[0])
    return done.stdout
