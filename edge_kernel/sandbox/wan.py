"""The appliance WAN gate (S1 on the appliance's own uplink).

On an edge appliance with a WAN interface, all WAN traffic is dropped (nftables, by
``rapha-airgap sever``) while a job runs, and the WAN is restored when it ends, so that
receipts can be anchored. If restoring fails, the WAN stays severed, a halt marker is
written, and the edge takes no new job until an operator has checked the appliance and
run ``rapha-edge wan resume``. A failed sever denies the job that wanted it.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

from jupyter_rapha.protocol.errors import GateDenied, SandboxFault

from ..audit import utc_now

log = logging.getLogger(__name__)
_IFACE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
HALT_FILE = "wan_halted.json"


class WanHalted(GateDenied):
    gate = "wan"


class WanGate:
    def __init__(self, binary: Path, interface: str, state_dir: Path, timeout: float = 30) -> None:
        if not _IFACE.match(interface):
            raise SandboxFault("sandbox.wan_interface is not a valid interface name")
        self.binary, self.interface, self.timeout = binary, interface, timeout
        self.halt_path = state_dir / HALT_FILE
        self._lock = threading.Lock()

    def check_open_for_jobs(self) -> None:
        if self.halt_path.exists():
            raise WanHalted("the edge is halted: its WAN could not be restored after a job",
                            hint="an operator must check the appliance, then run 'rapha-edge wan resume'")

    @contextmanager
    def severed(self) -> Iterator[None]:
        """Sever for the duration of a job; restore after, or halt."""
        with self._lock:
            self.check_open_for_jobs()
            if self._run("sever") != 0:
                raise SandboxFault("the WAN could not be severed for this job")
            try:
                yield
            finally:
                if self._run("restore") != 0:
                    self._halt()

    def status(self) -> str:
        return "severed" if self._run("status") == 0 else "open"

    def resume(self) -> None:
        """Operator action: restore (which checks itself) and clear the halt."""
        with self._lock:
            if self._run("restore") != 0:
                raise SandboxFault("the WAN could not be restored; it stays severed and the edge halted")
            self.halt_path.unlink(missing_ok=True)

    def _halt(self) -> None:
        log.error("WAN restore failed: the WAN stays severed and the edge takes no new job")
        self.halt_path.write_text(json.dumps({"since": utc_now(), "interface": self.interface}))

    def _run(self, action: str) -> int:
        try:
            done = subprocess.run([str(self.binary), action, "--wan", self.interface], capture_output=True,
                                  timeout=self.timeout, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("rapha-airgap %s failed to run: %s", action, type(exc).__name__)
            return 125
        if done.returncode not in (0, 1):
            log.error("rapha-airgap %s: %s", action, done.stderr.decode(errors="replace").strip()[:500])
        return done.returncode
