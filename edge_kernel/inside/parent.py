"""The job process's own tie to the edge (only without the air-gap, whose binary sets the
same signal on itself): see ``sandbox/lifeline.py`` for the layers that stop a job
outliving its edge."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
EXIT_PARENT_GONE = 125  # as rapha-airgap: nothing ran


def die_with_parent(parent_pid: int) -> None:
    """In the job process without the air-gap: be SIGKILLed when the edge dies. Exits at
    once when the edge is already gone (it died before the signal was set)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os._exit(EXIT_PARENT_GONE)
