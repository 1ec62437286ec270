"""Storage faults at a real edge: its state directory, or only its jobs directory, on a
small tmpfs that the test fills. The edge says it takes no jobs and why (GET /v1/edge),
refuses a job with the storage reason (503), still answers signed reads without letting
them be replayed, logs SQLite's own "database or disk is full" first, loses nothing, and
takes jobs again once space is freed."""

from __future__ import annotations

import errno
import logging
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests

from edge_kernel.audit import AuditLog
from edge_kernel.cli import main as edge_cli
from edge_kernel.db import Database
from edge_kernel.health import FULL, StorageHealth
from jupyter_rapha.client import EdgeClient, make_jobspec
from jupyter_rapha.protocol.contract import TERMINAL_STATES
from jupyter_rapha.protocol.canonical import canonical_json
from jupyter_rapha.protocol.errors import StorageUnavailable
from jupyter_rapha.protocol.request import sign_request
from tests.harness import complete_job, init_edge, start_edge

pytestmark = pytest.mark.needs_root

CELL = "import torch\nrapha.log(loss=0.5)\nrapha.save({'w': torch.zeros(2)})\n"


@pytest.fixture
def small_fs():
    """mount(path, size): a tmpfs of ``size`` at ``path``; all unmounted afterwards."""
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem refuses another byte; return it (unlink to free)."""
    filler = directory / "filler.bin"
    with open(filler, "wb", buffering=0) as handle:
        for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    handle.write(b"\xff" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def move_onto(small_fs, directory: Path, size: str) -> None:
    """Put an existing directory's content onto a tmpfs mounted in its place."""
    aside = directory.with_name(directory.name + ".disk")
    directory.rename(aside)
    small_fs(directory, size)
    shutil.copytree(aside, directory, dirs_exist_ok=True)
    shutil.rmtree(aside)


def edge_info(url: str) -> dict:
    return requests.get(url + "/v1/edge", timeout=10).json()


def wait_accepting(url: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = edge_info(url)
        if info["accepting_jobs"]:
            return info
        time.sleep(0.3)
    raise AssertionError(f"the edge did not take jobs again: {info}")


def signed(method: str, url: str, route: str, key, body: bytes = b"") -> requests.Response:
    header = sign_request(key, method, route, body, int(time.time()))
    return requests.request(method, url + route, data=body or None, timeout=30,
                            headers={"Authorization": header, "Content-Type": "application/json"})


def job_body(key, seed: int) -> bytes:
    spec = make_jobspec(CELL + f"# {seed}\n", "synthetic-cxr", ["image"], 4, 120, {"epochs": 1}, key.key_id)
    return canonical_json({"spec": spec.to_dict()})


def test_a_full_state_filesystem_stops_jobs_keeps_reads_and_recovers(tmp_path, small_fs):
    root = tmp_path / "edge"
    key = init_edge(root, records=32)
    move_onto(small_fs, root / "state", "24m")
    edge = start_edge(root)
    try:
        assert {k: edge_info(edge.url)[k] for k in ("accepting_jobs", "problems")} == \
            {"accepting_jobs": True, "problems": []}
        before = signed("GET", edge.url, "/v1/jobs", key)
        assert before.status_code == 200
        filler = fill(root / "state")

        refused = signed("POST", edge.url, "/v1/jobs", key, job_body(key, 0))
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "30", refused.text
        error = refused.json()["error"]
        assert error["kind"] == "StorageUnavailable" and "storage is full" in error["message"]
        assert str(root) not in refused.text and "sqlite" not in refused.text.lower()

        info = edge_info(edge.url)
        assert info["accepting_jobs"] is False and info["problems"] == [FULL]

        # A signed read still answers, from a nonce held in memory, and cannot be replayed.
        header = sign_request(key, "GET", "/v1/jobs", b"", int(time.time()))
        read = requests.get(edge.url + "/v1/jobs", headers={"Authorization": header}, timeout=30)
        assert read.status_code == 200 and read.json() == {"jobs": []}
        replay = requests.get(edge.url + "/v1/jobs", headers={"Authorization": header}, timeout=30)
        assert replay.status_code in (401, 503) and replay.status_code != 200, replay.text

        log = edge.log()
        first = next(line for line in log.splitlines() if "edge database failed" in line)
        assert "database or disk is full" in first, log[-3000:]
        assert "cannot rollback" not in log

        filler.unlink()
        assert wait_accepting(edge.url)["problems"] == []
        replay_after = requests.get(edge.url + "/v1/jobs", headers={"Authorization": header}, timeout=30)
        assert replay_after.status_code == 401  # the held nonce went into the table: still spent
        client = EdgeClient(edge.url, key)
        job_id = complete_job(client, key, CELL + "# after\n")
        assert client.receipt(job_id)["envelope"]
    finally:
        edge.stop()
    # Nothing written was lost: the log still reaches its head, with the refused submit's
    # absence and the later job's entries in it.
    assert edge_cli(["audit", "verify", "--config", str(root)]) == 0


def test_a_full_jobs_directory_fails_the_job_for_storage_and_recovers(tmp_path, small_fs):
    root = tmp_path / "edge"
    key = init_edge(root, records=32)
    jobs = small_fs(root / "state" / "jobs", "4m")
    edge = start_edge(root)
    try:
        client = EdgeClient(edge.url, key)
        filler = fill(jobs)
        spec = make_jobspec(CELL, "synthetic-cxr", ["image"], 4, 120, {"epochs": 1}, key.key_id)
        status = _wait_final(client, client.submit(spec))
        assert status["state"] == "failed", status
        assert any("storage is full" in reason for reason in status["reasons"]), status
        assert not any("internal error" in reason for reason in status["reasons"]), status

        info = edge_info(edge.url)
        assert info["accepting_jobs"] is False and info["problems"] == [FULL]
        again = signed("POST", edge.url, "/v1/jobs", key, job_body(key, 1))
        assert again.status_code == 503 and "storage is full" in again.json()["error"]["message"]

        filler.unlink()
        wait_accepting(edge.url)
        complete_job(client, key, CELL + "# after\n")
    finally:
        edge.stop()


def _wait_final(client: EdgeClient, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.status(job_id)
        if status["state"] in TERMINAL_STATES:  # the contract's: held is not final
            return status
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish: {status}")


def test_database_write_on_a_full_disk_raises_the_first_error(tmp_path, small_fs, caplog):
    """The rollback after a failed write must not replace SQLite's own reason."""
    state = small_fs(tmp_path / "state", "2m")
    health = StorageHealth((state,), recheck_seconds=0)
    db = Database(state / "edge.sqlite", health)
    log = AuditLog(db)
    for index in range(20):
        log.append("job.submit", detail={"n": index})
    filler = fill(state)
    caplog.set_level(logging.INFO)
    with pytest.raises(StorageUnavailable) as raised:
        for index in range(200):  # the WAL grows until a page does not fit
            log.append("job.submit", detail={"pad": "x" * 2000, "n": index})
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    assert "database or disk is full" in str(raised.value.__cause__)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "database or disk is full" in errors[0] and not any("cannot rollback" in e for e in errors), errors
    assert health.problems() == [FULL]
    filler.unlink()
    assert health.problems() == []
    log.append("job.submit", detail={"n": "after"})
    check = log.verify()
    assert check.ok and check.entries >= 21  # every committed entry is still there
    db.close()


def test_an_edge_stopped_while_its_disk_is_full_stops_cleanly_and_restarts(tmp_path, small_fs):
    root = tmp_path / "edge"
    init_edge(root, records=8)
    move_onto(small_fs, root / "state", "24m")
    edge = start_edge(root)
    filler = fill(root / "state")
    try:
        assert requests.get(edge.url + "/v1/edge", timeout=10).status_code == 200
    finally:
        edge.stop()
    assert edge.process.returncode == 0, edge.log()[-3000:]
    assert "Traceback" not in edge.log(), edge.log()[-3000:]
    filler.unlink()
    assert edge_cli(["audit", "verify", "--config", str(root)]) == 0  # what was written is all there
    start_edge(root).stop()
