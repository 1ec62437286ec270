"""The ordered, fail-closed gate pipeline (S4).

Each gate returns a ``GateResult``. The pipeline denies on a "deny" outcome, on any
exception, on a result of the wrong type, on an empty pipeline, and on a gate that says
it is "absent" (a missing component denies). In a receipt, "absent" marks a gate that
did not run because an earlier one refused the job.
Later gates see earlier results (the policy gate reads the scan, attestation and
air-gap evidence).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from jupyter_rapha.protocol.canonical import canonical_json
from jupyter_rapha.protocol.jobspec import JobSpec
from jupyter_rapha.protocol.receipt import sha256_hex

from ..data.registry import Dataset
from .obligations import Limits
from ..researchers import Researcher
from ..settings import Settings

log = logging.getLogger(__name__)

# Order matters: the policy gate decides last, on everything the others found.
GATE_ORDER = ("spec", "scan", "attestation", "airgap", "policy")


@dataclass(frozen=True)
class GateResult:
    name: str
    outcome: str  # "pass", "deny", "absent" or "unsafe" (passed, but a check was weakened)
    evidence: dict[str, Any] = field(default_factory=dict)
    reasons: tuple[str, ...] = ()
    obligations: dict[str, Any] = field(default_factory=dict)

    @property
    def evidence_sha256(self) -> str:
        return sha256_hex(canonical_json(self.evidence))

    def receipt_entry(self) -> dict[str, Any]:
        return {"name": self.name, "outcome": self.outcome, "evidence_sha256": self.evidence_sha256}

    @property
    def denies(self) -> bool:
        return self.outcome not in ("pass", "unsafe")


@dataclass
class GateContext:
    spec: JobSpec
    request_sha256: str
    researcher: Researcher
    dataset: Dataset | None  # None: the job names a dataset this edge does not have (the spec gate denies)
    settings: Settings
    results: dict[str, GateResult] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. cohort size from the broker
    # What the policy's obligations enforce on the run; set after the gates allowed the job.
    limits: Limits | None = None


class Gate(Protocol):
    name: str

    def check(self, ctx: GateContext) -> GateResult: ...


@dataclass
class PipelineOutcome:
    results: list[GateResult]

    @property
    def allowed(self) -> bool:
        return bool(self.results) and not any(r.denies for r in self.results)

    @property
    def reasons(self) -> list[str]:
        return [f"{r.name}: {reason}" for r in self.results if r.denies for reason in (r.reasons or ("denied",))]


def run_gates(gates: list[Gate], ctx: GateContext) -> PipelineOutcome:
    if not gates:
        return PipelineOutcome([GateResult("pipeline", "deny", reasons=("no gates configured",))])
    results: list[GateResult] = []
    for gate in gates:
        result = _run_one(gate, ctx)
        results.append(result)
        ctx.results[result.name] = result
        if result.denies:
            break  # later gates must not run on a job already refused
    return PipelineOutcome(results)


def _run_one(gate: Gate, ctx: GateContext) -> GateResult:
    name = getattr(gate, "name", type(gate).__name__)
    try:
        result = gate.check(ctx)
    except Exception as exc:  # a crashing gate denies (S4); the type only, never data
        log.warning("gate %s failed: %s", name, type(exc).__name__)
        return GateResult(name, "deny", {"fault": type(exc).__name__}, (f"gate {name} failed: {type(exc).__name__}",))
    if not isinstance(result, GateResult) or result.outcome not in ("pass", "deny", "absent", "unsafe"):
        return GateResult(name, "deny", {"fault": "bad result"}, (f"gate {name} returned no valid decision",))
    return result
