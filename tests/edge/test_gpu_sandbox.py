"""A GPU grant inside rapha-airgap, on a fake NVIDIA host whose nodes are made with mknod.

The fake /dev/nvidia* are character devices with the numbers of /dev/null (1, 3): the
sandbox binds them as it would bind a GPU, and the job can open and write them. The air-gap
probe runs with the same binds and must still find every way out blocked. On a machine
with a GPU, ``needs_gpu`` trains a CUDA step inside the sandbox with the host's real grant.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_kernel.sandbox.airgap import STANDARD_DEV, check_devices, self_check
from edge_kernel.sandbox.gpus import grant
from edge_kernel.sandbox.launch import GPU_ADDRESS_SPACE_BYTES
from edge_kernel.settings import SandboxSettings
from jupyter_rapha.protocol.errors import SandboxFault
from tests.edge.test_airgap import Edge, airgap_binary  # noqa: F401  (the fixture)
from tests.edge.test_gpus import LIBS, VERSION, fake_host

pytestmark = pytest.mark.needs_root
NULL_DEVICE = os.makedev(1, 3)


@pytest.fixture
def edge() -> Iterator[Edge]:
    base = Path(tempfile.mkdtemp(prefix="rapha-gpu-test-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    try:
        yield Edge(base)
    finally:
        shutil.rmtree(base)


@pytest.fixture
def fake_gpu_host() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="rapha-fake-nvidia-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    try:
        fake_host(root)
        for node in (root / "dev").iterdir():
            node.unlink()
            os.mknod(node, 0o666 | 0o020000, NULL_DEVICE)  # S_IFCHR
            os.chmod(node, 0o666)
        yield root
    finally:
        shutil.rmtree(root)


INSIDE = """
import json, os, stat
dev = sorted(os.listdir("/dev"))
nvidia1 = os.stat("/dev/nvidia1")
with open("/dev/nvidia1", "wb") as node:
    node.write(b"ioctl stand-in")
lib = "{lib}"
readable = open(lib, "rb").read(4) == b"\\x7fELF"
try:
    open(lib, "ab")
    writable = True
except OSError:
    writable = False
mounts = [line.split()[4:6] for line in open("/proc/self/mountinfo")]
proc = [m for m in mounts if m[0] == "/proc/driver"]
sys_mounts = [m for m in mounts if m[0] == "/sys" or m[0].startswith("/sys/")]
print(json.dumps({{"dev": dev, "char": stat.S_ISCHR(nvidia1.st_mode), "lib_readable": readable,
                  "lib_writable": writable, "proc_driver": proc, "sys": sys_mounts}}))
"""


def test_the_granted_gpu_nodes_alone_are_in_the_jobs_dev(airgap_binary, edge, fake_gpu_host):  # noqa: F811
    granted = grant(SandboxSettings(gpus=(1,)), fake_gpu_host)
    lib = fake_gpu_host / LIBS / f"libcuda.so.{VERSION}"
    options = [*granted.airgap_options(), "--ro-bind", "/proc/driver"]  # a /proc path, as on a GPU host
    result = edge.python(airgap_binary, INSIDE.format(lib=lib), device_options=options)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    # nvidia0 is not granted, the host's tty and disks are not there: only the standard nodes
    assert seen["dev"] == ["fd", "full", "null", "nvidia-modeset", "nvidia-uvm", "nvidia1", "nvidiactl", "random",
                           "shm", "stderr", "stdin", "stdout", "urandom", "zero"]
    assert seen["char"] and seen["lib_readable"] and not seen["lib_writable"]
    assert seen["proc_driver"] and seen["proc_driver"][0][1].startswith("ro,")
    assert seen["sys"] and all(options.startswith("ro,") for _, options in seen["sys"])


def test_a_job_without_gpus_sees_no_device_of_the_host(airgap_binary, edge):  # noqa: F811
    result = edge.python(airgap_binary, "import os; print(sorted(os.listdir('/dev')))", private_dev=True)
    assert result.returncode == 0, result.stderr
    assert not any(name.startswith(("nvidia", "tty", "vd", "sd", "nvme")) for name in eval(result.stdout))


def test_a_device_bind_that_is_not_a_character_device_is_refused(airgap_binary, edge, tmp_path):  # noqa: F811
    plain = tmp_path / "nvidia0"
    plain.write_bytes(b"")
    result = edge.run(airgap_binary, ["/bin/true"], device_options=["--dev-bind", str(plain)])
    assert result.returncode == 125 and "not a character device" in result.stderr


def test_the_probe_still_finds_every_way_out_blocked_with_gpus_bound(airgap_binary, fake_gpu_host):  # noqa: F811
    granted = grant(SandboxSettings(gpus="all"), fake_gpu_host)
    evidence = self_check(airgap_binary, device_options=granted.airgap_options())
    record = evidence["record"]
    assert record["all_blocked"] is True and record["sealed"] is True
    assert all(p["outcome"] == "blocked: EPERM" for p in record["probes"].values())
    assert set(record["dev"]) == STANDARD_DEV | {"nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-modeset"}


def test_a_device_in_view_that_was_not_granted_or_a_granted_one_missing_denies():
    record = {"dev": sorted(STANDARD_DEV | {"nvidia0", "nvidiactl"})}
    check_devices(record, ["--dev-bind", "/dev/nvidia0", "--dev-bind", "/dev/nvidiactl", "--ro-bind", "/x"])
    with pytest.raises(SandboxFault, match="not granted"):
        check_devices(record, ["--dev-bind", "/dev/nvidiactl"])
    with pytest.raises(SandboxFault, match="missing"):
        check_devices(record, ["--dev-bind", "/dev/nvidia0", "--dev-bind", "/dev/nvidiactl", "--dev-bind", "/dev/x"])
    with pytest.raises(SandboxFault, match="does not list"):
        check_devices({}, [])


def test_the_self_check_fails_on_a_device_bind_it_cannot_make(airgap_binary, tmp_path):  # noqa: F811
    with pytest.raises(SandboxFault, match="exit 125"):
        self_check(airgap_binary, device_options=["--dev-bind", str(tmp_path / "missing")])


CUDA_STEP = """
import torch
assert torch.cuda.is_available(), "no CUDA inside"
model = torch.nn.Linear(64, 2).cuda()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(32, 64, device="cuda"), torch.randint(0, 2, (32,), device="cuda")
loss = torch.nn.functional.cross_entropy(model(x), y)
loss.backward()
optimizer.step()
torch.cuda.synchronize()
print(torch.cuda.get_device_name(0))
"""


@pytest.mark.needs_gpu
def test_a_cuda_training_step_runs_inside_the_sandbox(airgap_binary, edge):  # noqa: F811
    granted = grant(SandboxSettings(gpus=(0,)))  # the host's real driver
    result = edge.python(airgap_binary, CUDA_STEP, device_options=granted.airgap_options(),
                         max_memory_bytes=GPU_ADDRESS_SPACE_BYTES)  # CUDA fails under a low RLIMIT_AS
    assert result.returncode == 0, result.stderr
    name, model = result.stdout.strip(), granted.devices[0].model
    assert name and (name in model or model in name)
