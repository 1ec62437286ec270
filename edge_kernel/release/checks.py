"""The shape of the disclosure checks' result, checked before anything uses it (S4).

``checks.json`` comes from a separate process; what it says decides a release and goes
into a signed receipt. So only the figures named here are kept, each a finite number (or
one of a few fixed words), and anything missing or malformed makes the whole result
unusable: the job is refused. A check cannot put record data into a receipt, because no
field here can hold any.
"""

from __future__ import annotations

import math
from typing import Any

from jupyter_rapha.protocol.errors import Fault, ReleaseDenied

# What the researcher reads when a check could not give its answer (no internals).
CHECK_FAILED = "release: a disclosure check could not be completed, so the outputs were not released"

_INT, _NUM, _OPT_NUM = "int", "number", "number or null"
FIGURES: dict[str, dict[str, Any]] = {
    "record_copies": {"records_scanned": _INT, "numbers_scanned": _INT, "records_matched": _INT,
                      "max_correlation": _NUM, "seconds": _NUM},
    "membership": {"status": ("checked", "not_checkable"), "auc": _OPT_NUM, "tpr_at_1pct_fpr": _OPT_NUM,
                   "records_used": _INT, "holdback_size": _INT, "attack": ("loss_threshold",),
                   "seconds": _OPT_NUM},
    "capacity": {"parameters": _INT, "records_used": _INT, "parameters_per_record": _NUM},
}
OPTIONAL = {("membership", "seconds")}


def parse_check(name: str, result: Any) -> dict[str, Any]:
    """One check's figures, kept to the known names; raises ReleaseDenied otherwise."""
    shape = FIGURES.get(name)
    if shape is None or not isinstance(result, dict):
        raise _unusable(f"unknown check {name!r} or figures not an object")
    kept: dict[str, Any] = {}
    for figure, kind in shape.items():
        if figure not in result and (name, figure) in OPTIONAL:
            continue
        value = result.get(figure, ...)
        if not _fits(value, kind):
            raise _unusable(f"{name}.{figure} is missing or not {kind}")
        kept[figure] = value
    if name == "membership" and kept["status"] == "checked" and kept["auc"] is None:
        raise _unusable("membership was checked but gave no AUC")
    return kept


def parse_checks(document: Any) -> dict[str, Any]:
    """The whole ``checks.json``: every check present, ``holdback_size`` a count."""
    if not isinstance(document, dict) or not isinstance(document.get("checks"), dict):
        raise _unusable("checks.json is not {\"checks\": {...}, \"holdback_size\": N}")
    checks = {name: parse_check(name, document["checks"].get(name)) for name in FIGURES}
    holdback = document.get("holdback_size")
    if not _fits(holdback, _INT):
        raise _unusable("holdback_size is not a count")
    return {"checks": checks, "holdback_size": holdback}


def _fits(value: Any, kind: Any) -> bool:
    if isinstance(kind, tuple):
        return value in kind
    if kind == _OPT_NUM and value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind == _INT:
        return isinstance(value, int) and value >= 0
    return math.isfinite(value)


class CheckFailed(ReleaseDenied):
    """A check crashed, ran out of time or memory, or answered something unusable. The
    researcher reads only CHECK_FAILED; ``problem`` is for the edge's log and audit."""

    def __init__(self, problem: str) -> None:
        super().__init__(CHECK_FAILED, reasons=[CHECK_FAILED])
        self.problem = problem


class ChecksInterrupted(Fault):
    """The edge stopped while the checks ran: no answer, so no decision; the job stays
    held and its checks run again at the next start."""


def _unusable(problem: str) -> CheckFailed:
    return CheckFailed(problem)
