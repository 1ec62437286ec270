"""lifeline: what an edge that starts after a crash does with job processes still
running from before it, with real processes. It kills only what is provably the old
job's (same boot, same start time), never a process that got its pid since."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_kernel.sandbox.lifeline import (PROCESS_FILE, JobProcess, members, read_process_file, stop_leftovers,
                                          write_process_file)
from jupyter_rapha.protocol.errors import SandboxFault
from tests.harness import stop_process
from tests.processes import descendants, running, start_time, survivors, wait_for_descendants

# A job's process group leader with a child of its own, as rapha-airgap and its init are.
LEADER = "import subprocess, time\nsubprocess.Popen(['sleep', '120'])\ntime.sleep(120)\n"


@pytest.fixture
def leftover():
    process = subprocess.Popen([sys.executable, "-c", LEADER], start_new_session=True)
    wait_for_descendants(process.pid, 1)
    yield process
    stop_process(process, timeout=5)


def record(jobs_dir: Path, job_id: str, process: JobProcess) -> Path:
    path = jobs_dir / job_id / PROCESS_FILE
    path.parent.mkdir(parents=True)
    write_process_file(path, process)
    return path


def test_a_leftover_job_group_is_stopped_and_its_file_removed(tmp_path, leftover):
    group = {(leftover.pid, start_time(leftover.pid)), *descendants(leftover.pid)}
    path = record(tmp_path, "job-1", JobProcess.of(leftover.pid))
    assert read_process_file(path) == JobProcess.of(leftover.pid)
    assert sorted(members(JobProcess.of(leftover.pid))) == sorted(pid for pid, _ in group)
    assert stop_leftovers(tmp_path) == ["job-1"]
    leftover.wait(timeout=5)
    assert survivors(group, timeout=5) == set()  # the child too: the whole group
    assert not path.exists()


def test_a_reused_pid_or_another_boot_is_never_killed(tmp_path, leftover):
    now = JobProcess.of(leftover.pid)
    # the pid now belongs to a process that started at another time: not the old job
    record(tmp_path, "reused", dataclasses.replace(now, start_time=now.start_time - 1))
    record(tmp_path, "rebooted", dataclasses.replace(now, boot_id="00000000-0000-0000-0000-000000000000"))
    assert stop_leftovers(tmp_path) == []
    assert running((leftover.pid, now.start_time)) and leftover.poll() is None
    assert list(tmp_path.glob(f"*/{PROCESS_FILE}")) == []  # nothing of theirs is left to check


def test_a_finished_job_leaves_nothing_to_stop(tmp_path):
    done = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    process = JobProcess.of(done.pid)
    done.wait()
    record(tmp_path, "job-1", process)
    assert members(process) == [] and stop_leftovers(tmp_path) == []


def test_an_unreadable_process_file_stops_the_start(tmp_path):
    path = tmp_path / "job-1" / PROCESS_FILE
    path.parent.mkdir()
    path.write_text(json.dumps({"pid": "x"}))
    with pytest.raises(SandboxFault, match="cannot tell whether the job still runs"):
        stop_leftovers(tmp_path)
