"""sandbox.gpus: what is found and granted on a fake NVIDIA host, and what is refused.

The fake host is a folder standing in for "/": /proc/driver/nvidia (version, one
information file per GPU), /dev nodes and the driver's libraries. No GPU is needed.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

from edge_kernel.inside.runtime import Rapha
from edge_kernel.sandbox.airgap import airgap_command
from edge_kernel.sandbox.gpus import NATIVE_TAGS, NO_GPUS, grant, job_grant, ldconfig_paths
from edge_kernel.settings import SandboxSettings, _settings
from jupyter_rapha.local import make_runtime
from jupyter_rapha.protocol.device import job_device
from jupyter_rapha.protocol.errors import BadInput, SandboxFault

VERSION = "550.54.15"
TAG = NATIVE_TAGS.get(platform.machine(), "x86-64")  # the loader cache's tag for this machine's ABI
LIBS = "usr/lib/x86_64-linux-gnu"
INFO = """Model: \t\t NVIDIA H200
IRQ:   \t\t 155
GPU UUID: \t GPU-2f6c7b1e-0000-0000-0000-00000000000{minor}
Bus Location: \t 0000:{bus}:00.0
Device Minor: \t {minor}
GPU Excluded:\t No
"""


def fake_host(root: Path, gpus: int = 2, *, uvm: bool = True, libcuda: bool = True) -> Path:
    proc = root / "proc/driver/nvidia"
    (proc / "gpus").mkdir(parents=True)
    (proc / "version").write_text(f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {VERSION}  Tue Mar  5 2024\n"
                                  "GCC version:  gcc version 12.2.0\n")
    for minor in range(gpus):
        info = proc / "gpus" / f"0000:{0x19 + minor:02x}:00.0"
        info.mkdir()
        (info / "information").write_text(INFO.format(minor=minor, bus=f"{0x19 + minor:02x}"))
    dev = root / "dev"
    dev.mkdir()
    names = [f"nvidia{i}" for i in range(gpus)] + ["nvidiactl", "nvidia-modeset"] + (["nvidia-uvm"] if uvm else [])
    for name in names:
        (dev / name).write_bytes(b"")
    lib = root / LIBS
    lib.mkdir(parents=True)
    libraries = ["libnvidia-ml", "libnvidia-ptxjitcompiler"] + (["libcuda"] if libcuda else [])
    for name in libraries:
        (lib / f"{name}.so.{VERSION}").write_bytes(b"\x7fELF")
        (lib / f"{name}.so.1").symlink_to(f"{name}.so.{VERSION}")
    (lib / "libcuda.so.470.82.01").write_bytes(b"\x7fELF")  # left over from an older driver
    (lib / "libc.so.6").write_bytes(b"\x7fELF")
    return root


def sandbox(**values: object) -> SandboxSettings:
    return SandboxSettings(**values)  # type: ignore[arg-type]


def test_all_gpus_give_their_nodes_the_driver_folder_and_the_libraries_of_that_driver(tmp_path):
    root = fake_host(tmp_path)
    granted = grant(sandbox(gpus="all"), root)
    dev = root / "dev"
    assert granted.device_nodes == (dev / "nvidia0", dev / "nvidia1", dev / "nvidiactl", dev / "nvidia-uvm",
                                    dev / "nvidia-modeset")  # nvidia-uvm-tools: not made on this host
    lib = root / LIBS
    assert granted.read_only == (root / "proc/driver/nvidia", lib / f"libcuda.so.{VERSION}",
                                 lib / f"libnvidia-ml.so.{VERSION}", lib / f"libnvidia-ptxjitcompiler.so.{VERSION}")
    assert granted.count == 2 and granted.driver_version == VERSION
    options = granted.airgap_options()
    assert options[:2] == ["--dev-bind", str(dev / "nvidia0")]
    assert options.count("--dev-bind") == 5 and options.count("--ro-bind") == 4


def test_the_description_names_model_and_driver_never_the_machine(tmp_path):
    description = grant(sandbox(gpus=(1,)), fake_host(tmp_path)).description()
    assert description == {"driver_version": VERSION, "devices": [{"model": "NVIDIA H200", "memory_mib": None}]}
    assert "GPU-" not in json.dumps(description) and "0000:" not in json.dumps(description)


def test_listed_indices_give_only_their_own_device_node(tmp_path):
    granted = grant(sandbox(gpus=(1,)), fake_host(tmp_path))
    names = [p.name for p in granted.device_nodes]
    assert names == ["nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-modeset"]


def test_libraries_are_found_through_the_loader_cache_listing(tmp_path):
    root = fake_host(tmp_path)
    i386 = root / "usr/lib/i386-linux-gnu"
    i386.mkdir(parents=True)
    (i386 / f"libcuda.so.{VERSION}").write_bytes(b"\x7fELF")  # the 32-bit build of the same driver
    (i386 / "libcuda.so.1").symlink_to(f"libcuda.so.{VERSION}")
    listing = (f"\t3 libs found in cache `/etc/ld.so.cache'\n"
               f"\tlibcuda.so.1 (libc6) => /usr/lib/i386-linux-gnu/libcuda.so.1\n"
               f"\tlibcuda.so.1 (libc6,{TAG}) => /{LIBS}/libcuda.so.1\n"
               f"\tlibnvidia-ml.so.1 (libc6,{TAG}) => /{LIBS}/libnvidia-ml.so.1\n"
               f"\tlibcuda.so.1 (libc6) => /usr/lib32/libcuda.so.1\n"
               f"\tlibc.so.6 (libc6,{TAG}) => /{LIBS}/libc.so.6\n")
    assert ldconfig_paths(root, listing)[0] == root / LIBS / f"libcuda.so.{VERSION}"  # the soname resolved
    granted = grant(sandbox(gpus="all"), root, ldconfig=listing)
    assert granted.read_only[1:] == (root / LIBS / f"libcuda.so.{VERSION}", root / LIBS / f"libnvidia-ml.so.{VERSION}")


def test_library_dirs_from_the_settings_are_searched_instead(tmp_path):
    root = fake_host(tmp_path)
    other = root / "opt/nvidia/lib"
    other.mkdir(parents=True)
    for name in ("libcuda", "libnvidia-ml"):
        (other / f"{name}.so.{VERSION}").write_bytes(b"\x7fELF")
    granted = grant(sandbox(gpus="all", gpu_library_dirs=("/opt/nvidia/lib",)), root)
    assert all(p.parent == other for p in granted.read_only[1:])


def test_no_gpus_asked_is_nothing_granted_and_no_host_is_read(tmp_path):
    assert grant(sandbox(), tmp_path / "missing") is NO_GPUS
    assert NO_GPUS.airgap_options() == [] and NO_GPUS.count == 0


@pytest.mark.parametrize("setting, host, expected", [
    ((2,), {}, "no GPU with index 2 on this host (the driver reports 0, 1)"),
    ((0,), {"uvm": False}, "/dev/nvidia-uvm is missing"),
    ("all", {"libcuda": False}, f"libcuda.so.{VERSION}, the driver's own library, is not in"),
    ("all", {"gpus": 0}, "the NVIDIA driver reports no GPU"),
])
def test_a_setting_the_host_cannot_honour_is_refused_naming_it(tmp_path, setting, host, expected):
    with pytest.raises(BadInput) as refused:
        grant(sandbox(gpus=setting), fake_host(tmp_path, **host))  # type: ignore[arg-type]
    assert refused.value.message.startswith("sandbox.gpus in edge.toml cannot be honoured")
    assert expected in refused.value.message


def test_a_host_without_the_driver_is_refused(tmp_path):
    with pytest.raises(BadInput, match=r"sandbox.gpus .* the NVIDIA driver is not loaded"):
        grant(sandbox(gpus=(0,)), tmp_path)


def test_a_driver_gone_after_the_start_fails_the_job_not_the_edge(tmp_path, monkeypatch):
    # job_grant reads "/": on this machine there is no NVIDIA driver.
    if Path("/proc/driver/nvidia/version").exists():
        pytest.skip("this host has the NVIDIA driver")
    with pytest.raises(SandboxFault, match="no longer there"):
        job_grant(sandbox(gpus=(0,)))


def test_the_edge_refuses_to_start_with_gpus_on_a_host_without_the_driver(tmp_path):
    if Path("/proc/driver/nvidia/version").exists():
        pytest.skip("this host has the NVIDIA driver")
    from edge_kernel.cli import main

    assert main(["init", str(tmp_path / "edge")]) == 0
    config = tmp_path / "edge" / "edge.toml"
    assert "\ngpus = []\n" in config.read_text()  # the default, written out for the hospital to edit
    config.write_text(config.read_text().replace("\ngpus = []\n", "\ngpus = [0]\n"))
    from edge_kernel.edge import Edge

    with pytest.raises(BadInput, match="sandbox.gpus in edge.toml cannot be honoured"):
        Edge.open(tmp_path / "edge")


@pytest.mark.parametrize("toml, expected", [
    ('gpus = "all"', "all"), ("gpus = [1, 0]", (0, 1)), ("gpus = []", ()), ("", ()),
])
def test_gpus_setting_forms(tmp_path, toml, expected):
    settings = _settings(tmp_path, {"edge": {"id": "e"}, "sandbox": _toml(toml)})
    assert settings.sandbox.gpus == expected


def _toml(line: str) -> dict[str, object]:
    import tomllib

    return tomllib.loads(line)


@pytest.mark.parametrize("toml, expected", [
    ('gpus = "some"', 'sandbox.gpus in edge.toml must be "all" or a list of GPU indices'),
    ("gpus = 0", 'sandbox.gpus in edge.toml must be "all" or a list'),
    ("gpus = [true]", "sandbox.gpus in edge.toml must list GPU indices from 0 to 255"),
    ("gpus = [-1]", "must list GPU indices"),
    ("gpus = [0, 0]", "names a GPU twice"),
    ('gpu_library_dirs = ["lib"]', "sandbox.gpu_library_dirs in edge.toml must be a list of absolute"),
    ('gpu_library_dirs = "/lib"', "sandbox.gpu_library_dirs in edge.toml must be a list"),
])
def test_bad_gpu_settings_are_refused_naming_the_setting(tmp_path, toml, expected):
    with pytest.raises(BadInput) as refused:
        _settings(tmp_path, {"edge": {"id": "e"}, "sandbox": _toml(toml)})
    assert expected in refused.value.message


def test_the_airgap_command_gets_a_private_dev_with_the_grant(tmp_path):
    granted = grant(sandbox(gpus=(0,)), fake_host(tmp_path))
    limits = dict(max_memory_bytes=1, max_cpu_seconds=1, max_wall_seconds=1, max_processes=1, max_file_bytes=1)
    line = airgap_command(Path("/bin/rapha-airgap"), ["true"], workdir=tmp_path,
                          device_options=granted.airgap_options(), **limits)  # type: ignore[arg-type]
    tail = line[line.index("--private-dev"):]
    assert tail[1:3] == ["--dev-bind", str(tmp_path / "dev/nvidia0")] and tail[-2:] == ["--", "true"]
    plain = airgap_command(Path("/bin/rapha-airgap"), ["true"], workdir=tmp_path, **limits)  # type: ignore[arg-type]
    assert "--private-dev" not in plain
    assert "--private-dev" in airgap_command(Path("/bin/rapha-airgap"), ["true"], workdir=tmp_path, private_dev=True,
                                             **limits)  # type: ignore[arg-type]


def test_the_job_reads_its_gpu_count_from_job_json_and_nothing_else_counts():
    from edge_kernel.inside.job_main import _granted_gpus

    assert _granted_gpus({"gpus": 2}) == 2
    assert [_granted_gpus(job) for job in ({}, {"gpus": True}, {"gpus": -1}, {"gpus": "2"})] == [0, 0, 0, 0]


def test_rapha_device_is_cuda_only_when_granted_and_seen():
    assert job_device(0, True) == "cpu"
    assert job_device(1, False) == "cpu"
    assert job_device(2, True) == "cuda"


def test_rapha_device_is_cpu_without_gpus_inside_and_in_the_dry_run():
    import torch

    inside = Rapha.__new__(Rapha)
    inside.gpus = 0
    assert inside.device == "cpu"
    inside.gpus = 1
    assert inside.device == ("cuda" if torch.cuda.is_available() else "cpu")
    local = make_runtime({"x": {"dtype": "float32", "shape": [2], "kind": "tensor"}}, None, 4, {}, 1)
    assert local.device == ("cuda" if torch.cuda.is_available() else "cpu")
