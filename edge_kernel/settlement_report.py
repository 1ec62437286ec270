"""``rapha-edge settlement``: the escrow claims the edge made, per researcher and dataset,
for the hospital's finance team, from the edge's own records (the outbox's
``escrow_claims`` and the jobs table).

Each claim is one row: when it was queued, the job, the researcher's registered name (or
key id when they were removed since), the dataset, its state (``mined``, or ``queued`` /
``signed`` while on its way, ``refused`` with the contract's reason), the records claimed,
the price, paid to the edge and refunded to the researcher (in the settlement token), the
chain transaction. A refund of a job that ended without release is a claim of 0 records.
The totals are per researcher and dataset over the mined claims.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, UTC
from typing import Any

from jupyter_rapha.protocol.errors import BadInput
from jupyter_rapha.protocol.escrow import from_units

FIELDS = ("queued", "job_id", "researcher", "dataset", "state", "records", "price_per_record", "paid", "refunded",
          "tx_hash", "detail")


def parse_since(text: str) -> float:
    """``--since`` as a UTC date (2026-12-01) or date and time (2026-12-01T09:00)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"--since {text!r} is not a date such as 2026-12-01 or 2026-12-01T09:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def claim_rows(db: Any, names: dict[str, str], since: float = 0.0, decimals: int = 18) -> list[dict[str, Any]]:
    """Every escrow claim queued at or after ``since`` (seconds), oldest first."""
    rows = db.query("SELECT c.job_id, c.records, c.price_units, c.state, c.claim, c.detail, c.enqueued,"
                    " j.researcher_key_id, j.dataset FROM escrow_claims c LEFT JOIN jobs j ON j.job_id = c.job_id"
                    " WHERE c.enqueued >= ? ORDER BY c.enqueued, c.job_id", (float(since),))
    out = []
    for row in rows:
        claim = json.loads(row["claim"]) if row["claim"] else {}
        price = int(row["price_units"])
        places = int(claim.get("decimals", decimals))
        out.append({
            "queued": datetime.fromtimestamp(float(row["enqueued"]), UTC).isoformat(timespec="seconds"),
            "job_id": row["job_id"], "researcher": names.get(row["researcher_key_id"] or "", row["researcher_key_id"]),
            "dataset": row["dataset"] or "", "state": row["state"], "records": int(row["records"]),
            "price_per_record": from_units(price, places),
            "paid": claim.get("paid", "") if claim else "", "refunded": claim.get("refunded", "") if claim else "",
            "tx_hash": claim.get("tx_hash", ""), "detail": row["detail"] or "",
            "paid_units": int(claim.get("paid_units", 0)), "refunded_units": int(claim.get("refunded_units", 0)),
            "decimals": places})
    return out


def totals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mined claims summed per (researcher, dataset)."""
    sums: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        if row["state"] != "mined":
            continue
        entry = sums.setdefault((row["researcher"], row["dataset"]), {
            "researcher": row["researcher"], "dataset": row["dataset"], "jobs": 0, "records": 0,
            "paid_units": 0, "refunded_units": 0, "decimals": row["decimals"]})
        entry["jobs"] += 1
        entry["records"] += row["records"]
        entry["paid_units"] += row["paid_units"]
        entry["refunded_units"] += row["refunded_units"]
    for entry in sums.values():
        entry["paid"] = from_units(entry["paid_units"], entry["decimals"])
        entry["refunded"] = from_units(entry["refunded_units"], entry["decimals"])
    return [sums[key] for key in sorted(sums)]


def render(rows: list[dict[str, Any]], style: str) -> str:
    if style == "json":
        return json.dumps({"claims": rows, "totals": totals(rows)}, indent=2)
    if style == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    lines = ["\t".join(FIELDS[:-1])] + ["\t".join(str(row[f]) for f in FIELDS[:-1]) for row in rows]
    lines += [f"total {t['researcher']} {t['dataset']}: {t['jobs']} jobs, {t['records']} records, {t['paid']} paid,"
              f" {t['refunded']} refunded" for t in totals(rows)]
    return "\n".join(lines) if rows else "no escrow claims"
