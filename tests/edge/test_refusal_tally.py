"""Anonymous refusals as one audit row per window (issue #21): written when the window
ends or on flush, counts by kind and method, and the chain still verifies."""

from __future__ import annotations

import time

from edge_kernel.audit import AuditLog, RefusalTally
from edge_kernel.db import Database


def rejects(audit: AuditLog) -> list[dict]:
    return [e["detail"] for e in audit.entries() if e["event"] == "request.reject"]


def test_a_window_of_refusals_is_one_row_written_when_the_window_ends(tmp_path):
    audit = AuditLog(Database(tmp_path / "edge.sqlite"))
    tally = RefusalTally(audit, window_seconds=0.3)
    for number in range(1000):
        tally.count(("Unsigned", "BadSignature")[number % 2], ("GET", "POST")[number % 2])
    assert rejects(audit) == []  # nothing written per request
    deadline = time.monotonic() + 10
    while not rejects(audit) and time.monotonic() < deadline:
        time.sleep(0.05)
    [summary] = rejects(audit)
    assert summary["refused"] == 1000 and summary["kinds"] == {"Unsigned": 500, "BadSignature": 500}
    assert summary["methods"] == {"GET": 500, "POST": 500} and summary["window_seconds"] == 0.3
    tally.count("Expired", "GET")
    tally.flush()
    tally.flush()  # nothing more to write
    assert [r["kinds"] for r in rejects(audit)] == [{"Unsigned": 500, "BadSignature": 500}, {"Expired": 1}]
    assert audit.verify().ok
