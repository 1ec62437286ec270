"""The NVIDIA GPUs a job's sandbox is granted (``sandbox.gpus``), found on the host.

What a CUDA process needs, found the way the NVIDIA Container Toolkit
(libnvidia-container) finds it:

- the device nodes: ``/dev/nvidiaN`` for each granted GPU (N is the GPU's *Device Minor*
  in ``/proc/driver/nvidia/gpus/<bus>/information``), ``nvidiactl`` and ``nvidia-uvm``
  (both required), ``nvidia-uvm-tools`` and ``nvidia-modeset`` where the driver made them;
- the driver's description: ``/proc/driver/nvidia/version`` for the driver version, each
  GPU's ``information`` file for its model;
- the driver's user-space libraries (libcuda, libnvidia-ml, libnvidia-ptxjitcompiler, ...)
  of exactly that driver version (``libcuda.so.<version>``): a library left over from
  another driver would fail in the job, far from the cause. They are looked up in the
  dynamic loader's cache (``ldconfig -p``), or in ``sandbox.gpu_library_dirs``.

The sandbox (``rapha-airgap exec``) gives the job a /dev of its own holding only the
standard nodes and these device binds, so a GPU that is not granted is not there at all;
``/proc/driver/nvidia`` and the libraries are bound read-only.

Everything is read under a ``root`` ("/" on an edge; a folder standing in for it in
tests). A setting the host cannot honour stops the edge's start, naming the setting.
What goes into the receipt is the model, memory where known, and the driver version:
never a GPU's UUID or bus location, which name the hospital's machine.
"""

from __future__ import annotations

import platform
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_rapha.protocol.errors import BadInput, SandboxFault

from ..settings import SandboxSettings

DRIVER_PROC = Path("proc/driver/nvidia")
REQUIRED_CONTROL = ("nvidiactl", "nvidia-uvm")
OPTIONAL_CONTROL = ("nvidia-uvm-tools", "nvidia-modeset")
# The compute and utility libraries libnvidia-container binds for the "compute,utility"
# capabilities, less the debugger (it needs ptrace, which the sandbox refuses) and OpenCL.
DRIVER_LIBRARIES = ("libcuda", "libnvidia-ml", "libnvidia-ptxjitcompiler", "libnvidia-nvvm", "libnvidia-gpucomp",
                    "libnvidia-allocator", "libnvidia-cfg", "libnvidia-fatbinaryloader", "libnvidia-compiler")
REQUIRED_LIBRARIES = ("libcuda", "libnvidia-ml")
# Where the loader looks when there is no cache to ask (a test root, a minimal host).
DEFAULT_LIBRARY_DIRS = ("usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib64", "usr/lib", "lib64")
LDCONFIG_SECONDS = 10
# The loader cache's tag for this machine's own ABI: a 32-bit libcuda of the same version
# (i386 packages) must not be bound in place of the 64-bit one.
NATIVE_TAGS = {"x86_64": "x86-64", "aarch64": "AArch64"}
SETTING = "sandbox.gpus"


@dataclass(frozen=True)
class GpuDevice:
    index: int  # the device minor: /dev/nvidia<index>
    model: str
    memory_mib: int | None = None  # not in the driver's proc files; None when not known


@dataclass(frozen=True)
class GpuGrant:
    """What the sandbox binds for the granted GPUs, and what the receipt says of them."""

    devices: tuple[GpuDevice, ...]
    driver_version: str
    device_nodes: tuple[Path, ...]  # rapha-airgap --dev-bind: char devices, at /dev/<name> inside
    read_only: tuple[Path, ...]  # rapha-airgap --ro-bind: the driver's proc folder, its libraries

    @property
    def count(self) -> int:
        return len(self.devices)

    def airgap_options(self) -> list[str]:
        options: list[str] = []
        for node in self.device_nodes:
            options += ["--dev-bind", str(node)]
        for path in self.read_only:
            options += ["--ro-bind", str(path)]
        return options

    def description(self) -> dict[str, Any]:
        """For the receipt and the policy input: nothing that names the machine."""
        return {"driver_version": self.driver_version,
                "devices": [{"model": d.model, "memory_mib": d.memory_mib} for d in self.devices]}


NO_GPUS = GpuGrant(devices=(), driver_version="", device_nodes=(), read_only=())


def grant(sandbox: SandboxSettings, root: Path = Path("/"), ldconfig: str | None = None) -> GpuGrant:
    """The grant for ``sandbox.gpus`` on the host under ``root``; BadInput naming the setting
    when the host cannot honour it. ``ldconfig``: the loader cache's listing (``ldconfig -p``
    output); None asks the host's loader when ``root`` is "/"."""
    if sandbox.gpus == ():
        return NO_GPUS
    proc = root / DRIVER_PROC
    version = driver_version(proc)
    present = gpus_present(proc)
    wanted: list[int] = sorted(present) if isinstance(sandbox.gpus, str) else list(sandbox.gpus)
    if not present:
        raise _refused("the NVIDIA driver reports no GPU on this host")
    missing = [index for index in wanted if index not in present]
    if missing:
        raise _refused(f"no GPU with index {', '.join(map(str, missing))} on this host "
                       f"(the driver reports {', '.join(map(str, sorted(present)))})")
    devices = tuple(present[index] for index in wanted)
    nodes = _device_nodes(root / "dev", [d.index for d in devices])
    libraries = _libraries(root, version, sandbox.gpu_library_dirs, ldconfig)
    return GpuGrant(devices=devices, driver_version=version, device_nodes=nodes, read_only=(proc, *libraries))


def job_grant(sandbox: SandboxSettings) -> GpuGrant:
    """The grant found again for one job: a driver unloaded or a GPU gone since the edge
    started fails the job (the sandbox is not built without what the setting promises)."""
    try:
        return grant(sandbox)
    except BadInput as refused:
        raise SandboxFault("the GPUs of sandbox.gpus are no longer there", hint=refused.message) from None


def _refused(reason: str) -> BadInput:
    return BadInput(f"{SETTING} in edge.toml cannot be honoured: {reason}",
                    hint="install the NVIDIA driver, or set sandbox.gpus to the GPUs this host has, or to []")


def driver_version(proc: Path) -> str:
    """From ``version``: 'NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  <date>'
    (the open modules say 'Open Kernel Module for x86_64  550.54.15')."""
    try:
        text = (proc / "version").read_text("utf-8", "replace")
    except OSError:
        raise _refused("the NVIDIA driver is not loaded (no /proc/driver/nvidia/version)") from None
    found = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", text)
    if found is None:
        raise _refused("the NVIDIA driver's version file does not name a version")
    return found.group(1)


def gpus_present(proc: Path) -> dict[int, GpuDevice]:
    """Each GPU the driver reports, by device minor."""
    present: dict[int, GpuDevice] = {}
    folder = proc / "gpus"
    for info in sorted(folder.glob("*/information")) if folder.is_dir() else []:
        fields = parse_information(info.read_text("utf-8", "replace"))
        minor = fields.get("Device Minor", "")
        if not minor.isdigit():
            raise _refused(f"the driver's information file for GPU {info.parent.name} has no device minor")
        present[int(minor)] = GpuDevice(index=int(minor), model=fields.get("Model", "unknown"))
    return present


def parse_information(text: str) -> dict[str, str]:
    """'Model:  NVIDIA H200' lines into a mapping."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields[key.strip()] = value.strip()
    return fields


def _device_nodes(dev: Path, indices: list[int]) -> tuple[Path, ...]:
    names = [f"nvidia{i}" for i in indices] + list(REQUIRED_CONTROL)
    missing = [name for name in names if not (dev / name).exists()]
    if missing:
        raise _refused(f"the device node /dev/{missing[0]} is missing (run nvidia-modprobe, or load nvidia-uvm)")
    return tuple(dev / name for name in [*names, *(n for n in OPTIONAL_CONTROL if (dev / n).exists())])


def _libraries(root: Path, version: str, dirs: tuple[str, ...], ldconfig: str | None) -> tuple[Path, ...]:
    if dirs:
        candidates = _listed(root, dirs)
    elif ldconfig is not None or root == Path("/"):
        candidates = ldconfig_paths(root, ldconfig if ldconfig is not None else _ask_ldconfig())
    else:
        candidates = _listed(root, DEFAULT_LIBRARY_DIRS)
    found = select_libraries(candidates, version)
    missing = [name for name in REQUIRED_LIBRARIES if name not in found]
    if missing:
        where = "sandbox.gpu_library_dirs" if dirs else "the loader cache (ldconfig -p)"
        raise _refused(f"{missing[0]}.so.{version}, the driver's own library, is not in {where}")
    return tuple(sorted(found.values()))


def _listed(root: Path, dirs: tuple[str, ...] | list[str]) -> list[Path]:
    paths: list[Path] = []
    for folder in dirs:
        where = root / folder.lstrip("/")
        if where.is_dir():
            paths += sorted(p for p in where.iterdir() if p.name.startswith("lib"))
    return paths


def _ask_ldconfig() -> str:
    try:
        done = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=LDCONFIG_SECONDS,
                              check=False, env={"PATH": "/usr/sbin:/sbin:/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired):
        raise _refused("the loader cache could not be read (ldconfig -p); set sandbox.gpu_library_dirs") from None
    return done.stdout


def ldconfig_paths(root: Path, listing: str) -> list[Path]:
    """The files the cache lists ('\\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/.../libcuda.so.1'),
    resolved to the versioned files their sonames point at."""
    paths: list[Path] = []
    tag = NATIVE_TAGS.get(platform.machine(), "")
    for line in listing.splitlines():
        name, arrow, target = line.partition(" => ")
        if arrow and (not tag or f",{tag}" in name) and target.strip().startswith("/"):
            path = (root / target.strip().lstrip("/")).resolve()
            if path.is_file():
                paths.append(path)
    return paths


def select_libraries(paths: list[Path], version: str) -> dict[str, Path]:
    """The driver's libraries among ``paths``: ``<name>.so.<version>`` exactly, first found."""
    found: dict[str, Path] = {}
    for path in paths:
        for name in DRIVER_LIBRARIES:
            if path.name == f"{name}.so.{version}" and path.is_file():
                found.setdefault(name, path)
    return found
