"""The receipt's ``disclosure`` section (predicate 1.3): what was checked before release.

Written by the edge after the disclosure checks and the release decision; read by
``rapha verify`` and the receipt widget. Pure: the section's shape and its one-line
summary. A receipt of version 1.3 or newer without a well-formed section, or whose
section does not say "release", fails verification: outputs that left unchecked must not
look like outputs that were checked.

    {"checks": {"record_copies": {records_scanned, numbers_scanned, records_matched,
                                  max_correlation, seconds},
                "membership": {status, auc, tpr_at_1pct_fpr, records_used, holdback_size, attack},
                "capacity": {parameters, records_used, parameters_per_record}},
     "holdback_size", "mode", "policy_decision", "rule", "reasons", "decision",
     "reviews": [{"checker_key_id", "decision", "reason", "reason_sha256", "signed_at", "statement_sha256"}]}
"""

from __future__ import annotations

from typing import Any

DISCLOSURE_SINCE_MINOR = 3
CHECKS = ("record_copies", "membership", "capacity")


def disclosure_problem(section: Any) -> str:
    """What is wrong with a disclosure section ("" if nothing)."""
    if not isinstance(section, dict):
        return "the receipt has no disclosure section"
    checks = section.get("checks")
    if not isinstance(checks, dict) or any(not isinstance(checks.get(name), dict) for name in CHECKS):
        return "the disclosure section does not list every check (record copies, membership, capacity)"
    if section.get("decision") != "release":
        return "the disclosure section does not record a release decision"
    if not isinstance(section.get("rule"), str) or not isinstance(section.get("reviews"), list):
        return "the disclosure section names no deciding rule or no reviews list"
    if not _count(checks["record_copies"].get("records_matched")):
        return "the disclosure section does not say how many records were found copied"
    if any(not isinstance(r, dict) or r.get("decision") not in ("approve", "reject") for r in section["reviews"]):
        return "a review in the disclosure section is malformed"
    return ""


def disclosure_summary(section: dict[str, Any]) -> str:
    """One line: the decision and rule, then each check's figures, then the reviewers."""
    checks = section["checks"]
    parts = [f"released ({section.get('mode')}, rule {section['rule']})",
             _copies(checks["record_copies"]), _membership(checks["membership"], section.get("holdback_size")),
             _capacity(checks["capacity"])]
    approvals = [r for r in section["reviews"] if r.get("decision") == "approve"]
    if approvals:
        parts.append("approved by " + ", ".join(str(r.get("checker_key_id"))[:24] for r in approvals))
    return "; ".join(parts)


def _copies(figures: dict[str, Any]) -> str:
    return (f"record copies: {figures.get('records_matched')} of {figures.get('records_scanned')} records "
            f"matched (max correlation {_num(figures.get('max_correlation'))})")


def _membership(figures: dict[str, Any], holdback: Any) -> str:
    if figures.get("status") != "checked":
        return "membership inference: not checkable"
    return (f"membership inference AUC {_num(figures.get('auc'))}, TPR at 1% FPR "
            f"{_num(figures.get('tpr_at_1pct_fpr'))} ({holdback} held back)")


def _capacity(figures: dict[str, Any]) -> str:
    return f"{_num(figures.get('parameters_per_record'), 1)} parameters per record used"


def _num(value: Any, places: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "?"
    return f"{value:.{places}f}"


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
