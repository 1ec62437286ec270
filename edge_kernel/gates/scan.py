"""The scan gate: the compliance scanner run on the job's cell, as a pipeline gate.

The report (scanner version, findings, counts) is the gate's evidence, so its canonical
SHA-256 goes into the receipt. The gate refuses any high-severity finding itself, so that
a missing or permissive policy cannot let a socket import through; the policy gate sees
the same report and may refuse more (by default, modules outside the allowlist).
The scan is defence in depth; the sandbox (S1) is the guarantee.
"""

from __future__ import annotations

from collections.abc import Iterable

from jupyter_rapha.protocol.scan import DEFAULT_ALLOWED_MODULES
from jupyter_rapha.protocol.scan_job import place, scan_job

from .pipeline import GateContext, GateResult


class ScanGate:
    name = "scan"

    def __init__(self, allowed_modules: Iterable[str] | None = DEFAULT_ALLOWED_MODULES) -> None:
        self.allowed_modules = frozenset(allowed_modules) if allowed_modules is not None else None

    def check(self, ctx: GateContext) -> GateResult:
        # the cell and every file it includes (findings name the file): same rules for each
        report = scan_job(ctx.spec.code, ctx.spec.includes, allowed_modules=self.allowed_modules)
        evidence = report.to_dict()
        high = report.high
        if high:
            reasons = tuple(f"{place(path, f.line)}: {f.message}" for path, f in high)
            return GateResult(self.name, "deny", evidence, reasons)
        return GateResult(self.name, "pass", evidence)
