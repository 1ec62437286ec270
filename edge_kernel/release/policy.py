"""The release decision: ``policies/release.rego`` on the disclosure checks' figures.

Evaluated through the same engine wrapper and bundle as the job policy (CPU-time
limited, ``data.json`` taken up when it changes), with its own query. Whatever the
policy answers is checked here: a decision that is missing, erred, ran out of time, or is
not exactly one of release / review / refuse with a rule and reasons refuses (S4).
"""

from __future__ import annotations

import logging
from typing import Any
from collections.abc import Callable

from jupyter_rapha.protocol.policy import DEFAULT_TIMEOUT_S, EngineLoader, PolicyBundle, evaluate_query, load_engine

log = logging.getLogger(__name__)

QUERY = "data.rapha.release.decision"
DECISIONS = ("release", "review", "refuse")
MODES = ("auto", "review", "two_person")
# What the researcher reads when the policy gave no usable answer (its fault stays in the edge log).
POLICY_FAULT = "the release policy gave no usable decision, so the outputs were not released"


class ReleasePolicy:
    def __init__(self, bundle: Callable[[], PolicyBundle | None], *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 engine: EngineLoader = load_engine) -> None:
        self._bundle, self.timeout_s, self.engine = bundle, timeout_s, engine

    def decide(self, dataset: str, checks: dict[str, Any]) -> dict[str, Any]:
        bundle = self._bundle()
        if bundle is None:
            return refused("no policy bundle")
        input_doc = {"dataset": dataset, "checks": checks.get("checks", {}),
                     "holdback_size": checks.get("holdback_size", 0)}
        raw, fault = evaluate_query(bundle, input_doc, query=QUERY, timeout_s=self.timeout_s, engine=self.engine)
        if fault is not None:
            return refused(fault)
        decision = parse_release_decision(raw)
        return {**decision, "bundle_sha256": bundle.digest}


def parse_release_decision(raw: Any) -> dict[str, Any]:
    """Accept only {"decision", "rule", "reasons": [str], "mode", "approvals_needed"}."""
    if not isinstance(raw, dict):
        return refused("the release decision is not an object")
    decision, rule, reasons = raw.get("decision"), raw.get("rule"), raw.get("reasons")
    mode, approvals = raw.get("mode"), raw.get("approvals_needed")
    if decision not in DECISIONS:
        return refused("the release decision is not one of release, review, refuse")
    if not isinstance(rule, str) or not rule:
        return refused("the release decision names no rule")
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        return refused("the release decision's reasons are not a list of strings")
    if mode not in MODES:
        return refused("the release decision's mode is not one of auto, review, two_person")
    if isinstance(approvals, bool) or not isinstance(approvals, int) or not 0 <= approvals <= 2:
        return refused("the release decision's approvals_needed is not 0, 1 or 2")
    if decision == "review" and approvals < 1:
        return refused("a review decision needs at least one approval")
    if decision == "refuse" and not reasons:
        reasons = ["the release policy refused the outputs"]
    return {"decision": decision, "rule": rule, "reasons": reasons, "mode": mode, "approvals_needed": approvals}


def refused(fault: str) -> dict[str, Any]:
    log.error("release policy: %s; the outputs are refused", fault)
    return {"decision": "refuse", "rule": "policy_fault", "reasons": [POLICY_FAULT], "mode": "auto",
            "approvals_needed": 0, "fault": fault}
