"""Turning the policy's obligations into limits the edge enforces itself.

An obligation the edge does not know, or knows but cannot enforce, denies the job (S4):
a hospital that writes "differential privacy required" must not get a job that trained
without it because the runner ignored a key it did not understand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from jupyter_rapha.protocol.errors import PolicyDenied
from jupyter_rapha.protocol.jobspec import JobSpec
from jupyter_rapha.protocol.private import MODE_DP, MODE_STANDARD

from ..data.holdback import Holdback, parse_holdback

KNOWN = ("max_epochs", "max_seconds", "dp_required", "holdback", "privacy", "run_approval")
RUN_APPROVAL_MODES = ("none", "one", "two_person")  # how many data stewards approve before the job runs


@dataclass(frozen=True)
class PrivacyBudget:
    """The policy's (epsilon, delta) for a DP job: the edge's trainer picks its noise from it."""
    epsilon: float
    delta: float


@dataclass(frozen=True)
class Limits:
    max_epochs: int | None = None
    max_seconds: int | None = None
    # records the broker holds back from the job for the membership-inference check
    holdback: Holdback | None = None
    # a DP job's privacy budget; None for a standard job (a DP job without one never runs)
    privacy: PrivacyBudget | None = None
    # data stewards' approval before the job runs (``run_approval.py``): none, one, two_person
    run_approval: str = "none"

    def apply(self, spec: JobSpec) -> JobSpec:
        if self.max_seconds is None or self.max_seconds >= spec.budget.max_seconds:
            return spec
        return replace(spec, budget=replace(spec.budget, max_seconds=self.max_seconds))


def enforceable(obligations: dict[str, Any], *, mode: str = MODE_STANDARD) -> Limits:
    """``mode``: the job's mode, read from its cell (``protocol.private.job_mode``). The
    policy refuses a standard job on a dataset that requires DP itself; this refuses it
    again, whatever the policy's deny rules say, since only DP mode enforces it."""
    unknown = sorted(set(obligations) - set(KNOWN))
    if unknown:
        raise PolicyDenied("the policy sets obligations this edge cannot enforce",
                           reasons=[f"obligation '{name}' is not enforced by this edge" for name in unknown])
    dp_required = obligations.get("dp_required")
    if dp_required not in (None, False, True):
        raise PolicyDenied("obligation 'dp_required' is not true or false",
                           reasons=["the policy's obligation 'dp_required' is malformed"])
    if dp_required and mode != MODE_DP:
        raise PolicyDenied("the policy requires differential privacy for this dataset",
                           reasons=["this dataset may only be trained with differential privacy: "
                                    "hand the model and the loss to rapha.fit_private"])
    privacy = _privacy(obligations.get("privacy")) if mode == MODE_DP else None
    holdback = obligations.get("holdback")
    run_approval = obligations.get("run_approval", "none")
    if run_approval not in RUN_APPROVAL_MODES:
        raise PolicyDenied("obligation 'run_approval' is not one of " + ", ".join(RUN_APPROVAL_MODES),
                           reasons=["the policy's obligation 'run_approval' is malformed"])
    return Limits(_positive(obligations, "max_epochs"), _positive(obligations, "max_seconds"),
                  parse_holdback(holdback) if holdback is not None else None, privacy=privacy,
                  run_approval=str(run_approval))


def _privacy(value: Any) -> PrivacyBudget:
    """A DP job needs the policy's budget; without a usable one it does not run (S4)."""
    if not isinstance(value, dict) or set(value) != {"epsilon", "delta"} \
            or not all(_real(value[k]) for k in ("epsilon", "delta")) \
            or not value["epsilon"] > 0 or not 0 < value["delta"] < 1:
        raise PolicyDenied("the policy gives this DP job no usable privacy budget",
                           reasons=["the policy sets no usable privacy budget (epsilon > 0, 0 < delta < 1) "
                                    "for this dataset"])
    return PrivacyBudget(float(value["epsilon"]), float(value["delta"]))


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(obligations: dict[str, Any], name: str) -> int | None:
    value = obligations.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PolicyDenied(f"obligation '{name}' is not a positive whole number",
                           reasons=[f"the policy's obligation '{name}' is malformed"])
    return value
