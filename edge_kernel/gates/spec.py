"""The first gate: is the job spec itself acceptable at this edge?

It checks what needs no policy engine: the signer is the researcher the spec names, the
dataset exists, every requested field is one the dataset declares, and the budget is
within the dataset's and the edge's ceilings.
"""

from __future__ import annotations

from jupyter_rapha.protocol.private import MODE_DP, job_mode

from .pipeline import GateContext, GateResult

MAX_JOB_SECONDS = 24 * 3600


class SpecGate:
    name = "spec"

    def check(self, ctx: GateContext) -> GateResult:
        spec, dataset = ctx.spec, ctx.dataset
        reasons: list[str] = []
        if ctx.researcher.key_id != spec.researcher_key_id:
            reasons.append("the job names a different researcher key than the one that signed it")
        if dataset is None:
            reasons.append(f"this edge has no dataset named {spec.dataset!r}")
        else:
            unknown = [f for f in spec.fields if f not in dataset.fields]
            if unknown:
                reasons.append(f"dataset {dataset.name} has no field(s) {', '.join(unknown)}; "
                               f"it offers {', '.join(dataset.fields)}")
            if not spec.fields:
                reasons.append("the job requests no fields")
            if spec.budget.max_records > dataset.max_records:
                reasons.append(f"budget of {spec.budget.max_records} records is over this dataset's "
                               f"limit of {dataset.max_records}")
        if spec.budget.max_seconds > MAX_JOB_SECONDS:
            reasons.append(f"max_seconds is over the edge's limit of {MAX_JOB_SECONDS}")
        allowed = ctx.settings.sandbox.max_processes if ctx.settings is not None else 1
        if spec.processes > allowed:
            reasons.append(f"the job asks for {spec.processes} processes; this edge allows at most {allowed} "
                           "(sandbox.max_processes)")
        if spec.processes > 1 and job_mode(spec.code) == MODE_DP:
            reasons.append("a differentially private job runs as one process (the edge's trainer); "
                           "leave out --processes")
        evidence = {"dataset": spec.dataset, "fields": list(spec.fields),
                    "max_records": spec.budget.max_records, "checks": len(reasons) == 0}
        return GateResult(self.name, "deny" if reasons else "pass", evidence, tuple(reasons))
