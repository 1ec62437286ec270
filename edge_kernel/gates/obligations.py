"""Turning the policy's obligations into limits the edge enforces itself.

An obligation the edge does not know, or knows but cannot enforce, denies the job (S4):
a hospital that writes "differential privacy required" must not get a job that trained
without it because the runner ignored a key it did not understand.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from jupyter_rapha.protocol.errors import PolicyDenied
from jupyter_rapha.protocol.jobspec import JobSpec

from ..data.holdback import Holdback, parse_holdback

KNOWN = ("max_epochs", "max_seconds", "dp_required", "holdback", "run_approval")
RUN_APPROVAL_MODES = ("none", "one", "two_person")  # how many data stewards approve before the job runs


@dataclass(frozen=True)
class Limits:
    max_epochs: int | None = None
    max_seconds: int | None = None
    # records the broker holds back from the job for the membership-inference check
    holdback: Holdback | None = None
    # data stewards' approval before the job runs (``run_approval.py``): none, one, two_person
    run_approval: str = "none"

    def apply(self, spec: JobSpec) -> JobSpec:
        if self.max_seconds is None or self.max_seconds >= spec.budget.max_seconds:
            return spec
        return replace(spec, budget=replace(spec.budget, max_seconds=self.max_seconds))


def enforceable(obligations: dict[str, Any]) -> Limits:
    unknown = sorted(set(obligations) - set(KNOWN))
    if unknown:
        raise PolicyDenied("the policy sets obligations this edge cannot enforce",
                           reasons=[f"obligation '{name}' is not enforced by this edge" for name in unknown])
    if obligations.get("dp_required") not in (None, False):
        raise PolicyDenied("the policy requires differential privacy for this dataset",
                           reasons=["this dataset may only be trained with differential privacy, "
                                    "which this edge does not enforce yet"])
    holdback = obligations.get("holdback")
    run_approval = obligations.get("run_approval", "none")
    if run_approval not in RUN_APPROVAL_MODES:
        raise PolicyDenied("obligation 'run_approval' is not one of " + ", ".join(RUN_APPROVAL_MODES),
                           reasons=["the policy's obligation 'run_approval' is malformed"])
    return Limits(_positive(obligations, "max_epochs"), _positive(obligations, "max_seconds"),
                  parse_holdback(holdback) if holdback is not None else None, str(run_approval))


def _positive(obligations: dict[str, Any], name: str) -> int | None:
    value = obligations.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PolicyDenied(f"obligation '{name}' is not a positive whole number",
                           reasons=[f"the policy's obligation '{name}' is malformed"])
    return value
