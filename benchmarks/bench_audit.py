"""The audit log check the edge makes before it serves, on a log of 100k entries: every
hash recomputed (``AuditLog.verify``), then held against the head file, plus SQLite's
page check (``PRAGMA quick_check``). The baseline is the same chain checked the general
way (each detail parsed and re-encoded in RFC 8785), measured in the same run.

Run: python benchmarks/bench_audit.py [--entries N] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_kernel.audit import GENESIS, AuditLog, entry_hash  # noqa: E402
from edge_kernel.audit_head import HeadFile, check_audit  # noqa: E402
from edge_kernel.db import Database  # noqa: E402
from jupyter_rapha.protocol.canonical import canonical_json  # noqa: E402

GOAL_SECONDS = 5.0  # a start that waits longer than this for its own check is too slow


def build(db: Database, entries: int) -> None:
    """A log shaped like a busy edge's: job events with ids, digests and gate summaries."""
    rows, prev = [], GENESIS
    for seq in range(1, entries + 1):
        ts = f"2026-12-01T10:{seq // 60 % 60:02d}:{seq % 60:02d}.{seq % 1000000:06d}Z"
        detail = {"envelope_sha256": f"{seq:064x}", "gates": [{"name": "scan", "outcome": "pass"}], "n": seq}
        digest = entry_hash(seq, ts, "job.run", f"{seq:032x}", "k" * 32, detail, prev)
        rows.append((seq, ts, "job.run", f"{seq:032x}", "k" * 32, canonical_json(detail).decode(), prev, digest))
        prev = digest
    with db.transaction() as conn:
        conn.executemany("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?)", rows)


def general_verify(db: Database) -> bool:
    prev = GENESIS
    for row in db.query("SELECT * FROM audit ORDER BY seq"):
        if row["hash"] != entry_hash(row["seq"], row["ts"], row["event"], row["job_id"], row["actor"],
                                     json.loads(row["detail"]), prev):
            return False
        prev = row["hash"]
    return True


def timed(runs: int, check) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        assert check()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        db = Database(Path(folder) / "edge.sqlite")
        head_file = HeadFile(Path(folder) / "audit-head.json")
        build(db, args.entries)
        log = AuditLog(db, head_file)
        head_file.write(log.head())
        start_check = timed(args.runs, lambda: check_audit(log, head_file, None).ok)
        pages = timed(args.runs, lambda: db.quick_check() == [])
        baseline = timed(1, lambda: general_verify(db))
        db.close()
    median = statistics.median(start_check)
    print(f"audit log of {args.entries} entries, runs: {args.runs}")
    print(f"start check (every hash, head file) median {median:.2f} s (goal {GOAL_SECONDS:.0f} s, "
          f"ratio {median / GOAL_SECONDS:.2f}); quick_check median {statistics.median(pages):.2f} s")
    print(f"general re-encoding check {baseline[0]:.2f} s (ratio to the start check {baseline[0] / median:.1f})")


if __name__ == "__main__":
    main()
