"""The air-gap gate: before a job runs, prove that a sandbox built like the job's is sealed.

The gate runs ``rapha-airgap probe`` inside the same kind of sandbox the job will get
(same hidden paths, same uid) with listeners on the host's loopback; any way out, or any
packet heard, denies (S1, S4). The probe's record and its digest are the evidence that
the policy gate requires and the receipt carries. With ``sandbox.gpus`` the probe's
sandbox holds the same device binds as the job's, and the evidence names the GPUs granted
(model, memory where known, driver version): the policy's GPU-seconds and the receipt's
``devices`` are read from it.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from jupyter_rapha.protocol.errors import RaphaError

from ..sandbox.airgap import find_airgap_binary, self_check, socket_filter_name
from ..sandbox.gpus import job_grant
from ..sandbox.launch import exposed_paths, hidden_paths
from .pipeline import GateContext, GateResult

log = logging.getLogger(__name__)


class AirgapGate:
    name = "airgap"

    def check(self, ctx: GateContext) -> GateResult:
        settings = ctx.settings
        if settings.sandbox.unsafe_no_airgap:
            log.warning("unsafe_no_airgap: job %s will run WITHOUT the air-gap", ctx.spec.job_id)
            return GateResult(self.name, "unsafe", {"sealed": False, "unsafe": "unsafe_no_airgap"})
        try:
            binary = find_airgap_binary(settings)
            hidden = hidden_paths(settings)
            gpus = job_grant(settings.sandbox)
            # A job of several processes runs under the filter that allows TCP on its own
            # loopback: the evidence is taken under that one, never the stricter one.
            inet_loopback = ctx.spec.processes > 1
            result = self_check(binary, hidden_paths=hidden, exposed_paths=exposed_paths(hidden),
                                device_options=gpus.airgap_options(), inet_loopback=inet_loopback)
        except RaphaError as exc:
            return GateResult(self.name, "deny", {"sealed": False, "fault": exc.message}, (exc.diagnostics(),))
        evidence = {"sealed": True, "binary_sha256": _digest(binary), "probe_sha256": result["sha256"],
                    "probe": result["record"], "gpus": gpus.description(),
                    "socket_filter": socket_filter_name(inet_loopback)}
        return GateResult(self.name, "pass", evidence)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
