"""The disclosure checks' figures as they appear to each reader, pure functions.

- The receipt's ``disclosure`` section (signed, released with the outputs): every check
  with its exact figures, the held-back set's size, the policy's mode, decision and
  deciding rule, and each output checker's key id and decision.
- A held job's progress counters (the researcher's live view): how many checks ran, the
  figures rounded to two decimals, and whether it waits for review. Rounded because every
  number that leaves is a channel, also from a job that is then refused: a correlation
  or an AUC to 17 digits carries tens of bits the job's code could steer.
- The output checker's summary of held outputs: tensor names, dtypes and shapes and the
  metric series, edge-side only, never record data.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

from .held import Held

CHECK_NAMES = ("record_copies", "membership", "capacity")
HELD_PROGRESS = ("checks_total", "checks_done", "review_needed", "approvals", "approvals_needed")
# figure in a check's result -> the progress counter that shows it rounded
_SHOWN = {
    "record_copies": {"records_matched": "copies_records_matched", "max_correlation": "copies_max_correlation"},
    "membership": {"auc": "mia_auc", "tpr_at_1pct_fpr": "mia_tpr_at_1pct_fpr"},
    "capacity": {"parameters_per_record": "parameters_per_record"},
}


def check_progress(figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Counters for a held job's progress while its checks run and after."""
    counters: dict[str, Any] = {"checks_total": len(CHECK_NAMES),
                                "checks_done": sum(1 for name in CHECK_NAMES if name in figures)}
    for check, shown in _SHOWN.items():
        result = figures.get(check)
        if not isinstance(result, dict):
            continue
        for figure, counter in shown.items():
            value = result.get(figure)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                counters[counter] = value if isinstance(value, int) else round(float(value), 2)
    if isinstance(figures.get("membership"), dict):
        counters["mia_checkable"] = int(figures["membership"].get("status") == "checked")
    return counters


def review_progress(decision: dict[str, Any], reviews: list[dict[str, Any]]) -> dict[str, Any]:
    approvals = len({r.get("checker_key_id") for r in reviews if r.get("decision") == "approve"})
    return {"review_needed": 1, "approvals": approvals,
            "approvals_needed": int(decision.get("approvals_needed", 1))}


def disclosure_section(checks: dict[str, Any], decision: dict[str, Any], reviews: list[dict[str, Any]],
                       final: str) -> dict[str, Any]:
    """The receipt's ``disclosure``: what was checked, what was found, who decided."""
    return {
        "checks": checks["checks"],
        "holdback_size": checks.get("holdback_size", 0),
        "mode": decision.get("mode"),
        "policy_decision": decision.get("decision"),
        "rule": decision.get("rule"),
        "reasons": list(decision.get("reasons", [])),
        "decision": final,
        "reviews": [{"checker_key_id": r.get("checker_key_id"), "decision": r.get("decision"),
                     "reason": r.get("reason", ""), "statement_sha256": r.get("statement_sha256"),
                     # when the checker signed, and the reason's digest (release/review.py keeps both)
                     **{k: r[k] for k in ("reason_sha256", "signed_at") if k in r}}
                    for r in reviews],
    }


def held_summary(held: Held) -> dict[str, Any]:
    return {"weights_bytes": len(held.weights), "tensors": tensor_summary(held.weights),
            "metrics": {name: {"count": len(values), "last": values[-1] if values else None}
                        for name, values in sorted(held.metrics.items())}}


def tensor_summary(weights: bytes) -> list[dict[str, Any]]:
    """Names, dtypes and shapes from the safetensors header (checked before holding)."""
    (length,) = struct.unpack("<Q", weights[:8])
    header = json.loads(weights[8:8 + length])
    return [{"name": name, "dtype": entry["dtype"], "shape": entry["shape"]}
            for name, entry in sorted(header.items()) if name != "__metadata__"]
