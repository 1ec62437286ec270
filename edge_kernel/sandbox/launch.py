"""The one hook through which every job command passes before it is started.

Today it returns the command unchanged. The air-gap step prefixes it with
``rapha-airgap exec ... --`` (network namespace, seccomp, unprivileged uid, read-only
filesystem view). The runner therefore keeps the job independent of anything outside
the job directory and the Python installation, and passes the broker socket as an
inherited fd listed in ``keep_fds``.
"""

from __future__ import annotations

from pathlib import Path

from jupyter_rapha.protocol.jobspec import JobSpec

from ..settings import Settings


def wrap_command(cmd: list[str], workdir: Path, spec: JobSpec, keep_fds: tuple[int, ...],
                 settings: Settings) -> list[str]:
    return list(cmd)
