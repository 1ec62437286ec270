"""The one hook through which every job command passes before it is started (S1).

``wrap_command`` prefixes the job with ``rapha-airgap exec``: a fresh network namespace
with loopback only, seccomp refusing every socket family but AF_UNIX, an unprivileged
uid, a read-only view of the filesystem in which the edge's config directory (keys, job
database, other jobs), every dataset's storage, root's home and the host's sockets are
covered, and rlimits from the job's budget. The only way to run a job without it is
``sandbox.unsafe_no_airgap``, which warns on every job and is written into the receipt.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import edge_kernel
import jupyter_rapha
from jupyter_rapha.protocol.errors import SandboxFault
from jupyter_rapha.protocol.jobspec import JobSpec

from ..artifacts import INPUTS_DIR
from ..data.registry import DatasetRegistry
from ..settings import Settings
from .airgap import NOBODY, airgap_command, find_airgap_binary
from .gpus import job_grant

log = logging.getLogger(__name__)

HOST_SECRETS = (Path("/run"), Path("/var/run"), Path("/root"), Path("/home"), Path("/etc/ssh"))
# rapha-airgap gives every job a private, empty /tmp and /dev/shm: code living there (a
# checkout or virtualenv under /tmp, say) must be bound back like code under a hidden path.
PRIVATE_MOUNTS = (Path("/tmp"), Path("/dev/shm"))
MAX_PROCESSES = 512  # RLIMIT_NPROC counts threads; torch starts a pool per core
MAX_MEMORY_BYTES = 16 * 1024**3  # address space: torch reserves far more than it touches
# CUDA reserves address space for unified memory far beyond any RAM (its context creation
# fails under a low RLIMIT_AS), so a job with GPUs gets the whole 47-bit user space: the
# limit then bounds nothing, and host memory is bounded only by the machine.
GPU_ADDRESS_SPACE_BYTES = 1 << 47
OUTPUT_SLACK_BYTES = 64 * 1024**2


def wrap_command(cmd: list[str], workdir: Path, spec: JobSpec, keep_fds: tuple[int, ...],
                 settings: Settings) -> list[str]:
    if settings.sandbox.unsafe_no_airgap:
        log.warning("unsafe_no_airgap: job %s runs WITHOUT the air-gap; never do this with real data", spec.job_id)
        return list(cmd)
    binary = find_airgap_binary(settings)
    hidden = hidden_paths(settings)
    os.chown(workdir, NOBODY, NOBODY)  # the one place the job may write
    gpus = job_grant(settings.sandbox)
    return airgap_command(
        binary, cmd, workdir=workdir, keep_fds=keep_fds,
        max_memory_bytes=GPU_ADDRESS_SPACE_BYTES if gpus.count else MAX_MEMORY_BYTES,
        max_cpu_seconds=spec.budget.max_seconds * 4,  # CPU seconds: several threads, same wall budget
        max_wall_seconds=spec.budget.max_seconds + 5, max_processes=MAX_PROCESSES * spec.processes,
        max_file_bytes=spec.output_policy.max_weights_bytes + OUTPUT_SLACK_BYTES,
        hidden_paths=hidden, exposed_paths=exposed_paths(hidden, job_inputs(workdir)),
        private_dev=True, device_options=gpus.airgap_options(),
        allow_inet_loopback=spec.processes > 1)  # the ranks' rendezvous, on the job's own loopback


def job_inputs(workdir: Path) -> tuple[Path, ...]:
    """The job's staged artifacts and included files (``artifacts.INPUTS_DIR``), beside
    its directory inside the hidden state folder: bound back into its view read-only."""
    inputs = workdir.parent / INPUTS_DIR
    return (inputs,) if inputs.is_dir() else ()


def hidden_paths(settings: Settings) -> list[Path]:
    """What a job must not see: the edge's own directory, the data, host secrets."""
    registry = DatasetRegistry(settings.config_dir)
    paths = [settings.config_dir, *HOST_SECRETS]
    for dataset in registry.all().values():
        if dataset.source != "dicomweb":  # a PACS is a URL: the network namespace covers it
            paths.append(registry.resolve(dataset))
        opt_out = registry.resolve_opt_out(dataset)
        if opt_out is not None:
            paths.append(opt_out)
    return [p.resolve() for p in paths if p.exists()]


def exposed_paths(hidden: list[Path], extra: tuple[Path, ...] = ()) -> list[Path]:
    """The Python installation and this package (and ``extra`` paths, such as the probe
    binary), bound back read-only if a hidden path or a private mount covers them (an
    interpreter under /root, a checkout under /tmp). Refuses a layout in which binding them
    back would uncover something hidden, such as a config directory inside the code."""
    needed = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(),
              Path(edge_kernel.__file__).resolve().parent, Path(jupyter_rapha.__file__).resolve().parent,
              *(Path(p).resolve() for p in extra)}
    covered = [*hidden, *(p.resolve() for p in PRIVATE_MOUNTS)]
    exposed = sorted(p for p in needed if any(p.is_relative_to(h) for h in covered))
    for path in exposed:
        for secret in hidden:
            if secret != path and secret.is_relative_to(path):
                raise SandboxFault("a hidden path lies inside the Python installation or the edge code",
                                   hint="keep the edge config and datasets outside the code and the virtualenv")
    return exposed
