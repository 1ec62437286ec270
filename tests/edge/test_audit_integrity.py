"""A damaged audit log stops the edge (S7): entries removed from the end, an emptied
table, a deleted database, an edited entry, damaged pages. Each is refused by
`rapha-edge serve` naming the file and the way back, and reported by `audit verify`;
healthy logs (also one whose head file lagged a crash) still start."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from edge_kernel.audit import AuditLog
from edge_kernel.audit_head import HEAD_FILE, AuditHead, HeadFile
from edge_kernel.cli import main as edge_cli
from edge_kernel.db import Database
from edge_kernel.edge import open_records
from edge_kernel.health import StorageHealth
from edge_kernel.settings import load_settings
from jupyter_rapha.protocol.errors import AuditDamaged
from tests.harness import init_edge, start_edge


@pytest.fixture
def edge_dir(tmp_path):
    """An initialised demo edge whose log holds 12 entries, made the way the edge makes them."""
    root = tmp_path / "edge"
    init_edge(root, records=8)
    settings = load_settings(root)
    db = Database(settings.db_path)
    log = AuditLog(db, HeadFile(settings.state_dir / HEAD_FILE))
    for index in range(11):
        log.append("job.submit", job_id=f"{index:032x}", detail={"n": index})
    db.close()
    return root


def raw(root: Path, *statements: str) -> None:
    conn = sqlite3.connect(root / "state" / "edge.sqlite")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def serve_refused(root: Path, capsys) -> str:
    assert edge_cli(["serve", "--config", str(root), "--port", "0"]) == 1
    return capsys.readouterr().err


def verify(root: Path, capsys) -> tuple[int, str]:
    code = edge_cli(["audit", "verify", "--config", str(root)])
    out = capsys.readouterr()
    return code, out.out + out.err


DAMAGES = {
    "rows deleted at the end": (lambda root: raw(root, "DELETE FROM audit WHERE seq > 9"), "TRUNCATED"),
    "every row deleted": (lambda root: raw(root, "DELETE FROM audit"), "TRUNCATED"),
    "database deleted": (lambda root: (root / "state" / "edge.sqlite").unlink(), "MISSING"),
    "row edited in the middle": (lambda root: raw(root, "UPDATE audit SET detail='{\"n\":99}' WHERE seq=5"),
                                 "BROKEN at entry 5"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_log_refuses_start_naming_file_and_recovery(edge_dir, capsys, damage):
    assert verify(edge_dir, capsys)[0] == 0
    tamper, word = DAMAGES[damage]
    tamper(edge_dir)
    refused = serve_refused(edge_dir, capsys)
    assert word in refused and str(edge_dir / "state" / "edge.sqlite") in refused, refused
    assert "restore" in refused and "backup" in refused, refused
    code, report = verify(edge_dir, capsys)
    assert code == 1 and word in report and "to recover" in report, report
    if damage == "database deleted":
        assert not (edge_dir / "state" / "edge.sqlite").exists()  # neither serve nor verify made a new one


def test_truncation_shows_the_recorded_head(edge_dir, capsys):
    raw(edge_dir, "DELETE FROM audit WHERE seq > 9")
    code, report = verify(edge_dir, capsys)
    assert code == 1 and "holds 9 entries" in report and "records 12 entries" in report, report
    assert str(edge_dir / "state" / HEAD_FILE) in report


def test_rewritten_tail_is_broken_even_at_the_same_length(edge_dir, capsys):
    """Remove the last two entries and append two others: a chain that checks, the same
    count, but not the head the file recorded."""
    raw(edge_dir, "DELETE FROM audit WHERE seq > 10")
    settings = load_settings(edge_dir)
    db = Database(settings.db_path)
    log = AuditLog(db)  # no head file: as a tamperer writing the database directly
    log.append("job.submit", detail={"forged": 1})
    log.append("job.submit", detail={"forged": 2})
    db.close()
    code, report = verify(edge_dir, capsys)
    assert code == 1 and "BROKEN" in report and "different entry 12" in report, report
    assert "BROKEN" in serve_refused(edge_dir, capsys)


def test_missing_head_file_with_a_log_is_refused(edge_dir, capsys):
    (edge_dir / "state" / HEAD_FILE).unlink()
    refused = serve_refused(edge_dir, capsys)
    assert "head file" in refused and "missing" in refused and "audit accept" in refused, refused


def test_lagging_head_file_after_a_crash_still_starts_and_catches_up(edge_dir):
    """The head file is written after the commit: a crash between them leaves it behind
    the log, which is not damage."""
    settings = load_settings(edge_dir)
    head_file = HeadFile(settings.state_dir / HEAD_FILE)
    db = Database(settings.db_path)
    earlier = AuditHead(10, AuditLog(db).hash_at(10))
    db.close()
    head_file.write(earlier)
    db, audit = open_records(settings, StorageHealth())
    try:
        assert head_file.read() == audit.head() and audit.head().entries == 12
    finally:
        db.close()


def test_a_running_edge_keeps_its_head_file_and_restarts(tmp_path):
    """Through the real `rapha-edge serve`: the entries it made (start, stop) are in its
    head file, so it restarts; with its last entries removed it does not."""
    root = tmp_path / "edge"
    init_edge(root, records=8)
    start_edge(root).stop()
    head = json.loads((root / "state" / HEAD_FILE).read_text())
    assert head["entries"] == 3  # edge.init, edge.start, edge.stop
    start_edge(root).stop()
    raw(root, "DELETE FROM audit WHERE seq > 4")
    with pytest.raises(RuntimeError, match="TRUNCATED"):
        start_edge(root, timeout=30)


def test_accepting_a_known_loss_records_it_and_starts_again(edge_dir, capsys):
    raw(edge_dir, "DELETE FROM audit WHERE seq > 9")
    assert edge_cli(["audit", "accept", "--config", str(edge_dir)]) == 2  # a reason is required
    assert edge_cli(["audit", "accept", "--config", str(edge_dir), "--reason", "restored from backup"]) == 0
    capsys.readouterr()
    assert verify(edge_dir, capsys)[0] == 0
    settings = load_settings(edge_dir)
    db = Database(settings.db_path)
    [entry] = AuditLog(db).entries()[-1:]
    db.close()
    assert entry["event"] == "audit.accept" and entry["detail"]["lost"][0]["entries"] == 12
    assert entry["detail"]["found"]["entries"] == 9 and entry["detail"]["reason"] == "restored from backup"


def test_accept_after_a_deleted_database_starts_a_log_that_records_it(edge_dir, capsys):
    (edge_dir / "state" / "edge.sqlite").unlink()
    assert edge_cli(["audit", "accept", "--config", str(edge_dir), "--reason", "disk replaced"]) == 0
    capsys.readouterr()
    assert verify(edge_dir, capsys)[0] == 0


def test_accept_refuses_a_broken_chain(edge_dir, capsys):
    raw(edge_dir, "UPDATE audit SET detail='{\"n\":99}' WHERE seq=5")
    assert edge_cli(["audit", "accept", "--config", str(edge_dir), "--reason", "x"]) == 1
    assert "cannot be accepted" in capsys.readouterr().err


def test_garbage_pages_refuse_start_naming_the_file(edge_dir, capsys):
    settings = load_settings(edge_dir)
    db = Database(settings.db_path)
    log = AuditLog(db, HeadFile(settings.state_dir / HEAD_FILE))
    for index in range(300):  # a few dozen pages
        log.append("job.progress", job_id=f"{index:032x}", detail={"pad": "x" * 200})
    db.close()
    path = settings.db_path
    page = 4096
    size = path.stat().st_size
    assert size > 20 * page
    with open(path, "r+b") as handle:  # page 1 (header and schema) stays; table pages become noise
        for offset in range(3 * page, size - page, 2 * page):
            handle.seek(offset)
            handle.write(os.urandom(page))
    refused = serve_refused(edge_dir, capsys)
    assert "damaged" in refused and str(path) in refused and "backup" in refused, refused
    code, report = verify(edge_dir, capsys)
    assert code == 1 and "BROKEN" in report and "damaged" in report, report


def test_open_records_raises_audit_damaged_for_a_truncated_log(edge_dir):
    raw(edge_dir, "DELETE FROM audit WHERE seq > 3")
    with pytest.raises(AuditDamaged, match="TRUNCATED"):
        open_records(load_settings(edge_dir), StorageHealth())
