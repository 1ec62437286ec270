"""The check process runner: a separate process under the air-gap with time and memory
limits. A crash, a timeout, memory exhaustion, output that is not the figures, or a
check that reaches for the network: each refuses (S4), with a reason that names no
internals, and the directory holding the reloaded records is gone after."""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
import sys
import threading

import numpy as np
import pytest

from edge_kernel.release.check_main import read_records, read_tensors
from edge_kernel.release.membership import capacity
from edge_kernel.release.check_runner import CheckProcess, write_records
from edge_kernel.release.checks import CHECK_FAILED, CheckFailed
from edge_kernel.release.held import Held
from edge_kernel.settings import load_settings
from tests.harness import init_edge

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_airgap]

FIGURES = {
    "capacity": {"parameters": 2, "records_used": 2, "parameters_per_record": 1.0},
    "record_copies": {"records_scanned": 2, "numbers_scanned": 2, "records_matched": 0, "max_correlation": 0.1,
                      "seconds": 0.01},
    "membership": {"status": "not_checkable", "auc": None, "tpr_at_1pct_fpr": None, "records_used": 2,
                   "holdback_size": 1, "attack": "loss_threshold"},
}


class FakeRecords:
    """Two used records and one held back, as the dataset's source would give them."""

    def reload(self, job):
        used = [{"image": np.full((4, 4), i, np.float32), "finding": np.asarray(i)} for i in range(2)]
        return used, used[:1], {"image": {"dtype": "float32", "shape": [4, 4]}}


class Job:
    job_id = "ab" * 16


def weights() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.0, 2.0)


HELD = Held(weights(), {"loss": [0.5]}, {})


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    root = tmp_path_factory.mktemp("checks") / "edge"
    init_edge(root, records=4)
    return load_settings(root)


def script(body: str) -> list[str]:
    return [sys.executable, "-c", body]


def answering(figures: dict) -> list[str]:
    """A stand-in check process that prints each figure line and writes checks.json."""
    return script(
        "import json\n"
        f"figures = {json.dumps(figures)!r}\n"
        "figures = json.loads(figures)\n"
        "for name, f in figures.items(): print(json.dumps({'check': name, 'figures': f}), flush=True)\n"
        "open('checks.json', 'w').write(json.dumps({'checks': figures, 'holdback_size': 1}))\n")


def run(settings, command, **limits):
    seen = []
    result = CheckProcess(settings, FakeRecords(), command=command, **limits).run(
        Job(), HELD, lambda name, figures: seen.append(name))
    return result, seen


def refused(settings, command, **limits) -> str:
    with pytest.raises(CheckFailed) as caught:
        run(settings, command, **limits)
    assert caught.value.reasons == [CHECK_FAILED]  # the researcher reads this, nothing more
    assert not (settings.jobs_dir / Job.job_id / "checks").exists()  # reloaded records removed
    return caught.value.problem


def test_figures_are_read_as_they_come_and_only_known_ones_kept(settings):
    extra = {name: {**f, "pixels": [1, 2, 3]} for name, f in FIGURES.items()}
    result, seen = run(settings, answering(extra))
    assert seen == list(FIGURES)
    assert result == {"checks": FIGURES, "holdback_size": 1}
    assert not (settings.jobs_dir / Job.job_id / "checks").exists()


def test_a_crashing_check_refuses(settings):
    assert "exited with 3" in refused(settings, script("import sys; sys.exit(3)"))


def test_a_check_killed_by_a_signal_refuses(settings):
    assert "exited with" in refused(settings, script("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"))


def test_a_check_past_its_time_refuses(settings):
    assert "ran past" in refused(settings, script("import time; time.sleep(60)"), timeout_s=2)


def test_a_check_past_its_memory_refuses(settings):
    hog = script("import sys; b = bytearray(1_500_000_000); sys.exit(0)")
    assert "exited with" in refused(settings, hog, memory_bytes=1024**3)


def test_a_line_that_is_not_figures_refuses(settings):
    assert "not JSON" in refused(settings, script("print('hello', flush=True)"))


def test_a_missing_figure_refuses(settings):
    broken = {**FIGURES, "record_copies": {k: v for k, v in FIGURES["record_copies"].items() if k != "max_correlation"}}
    assert "max_correlation" in refused(settings, answering(broken))


def test_a_check_without_its_result_file_refuses(settings):
    assert "checks.json" in refused(settings, script("pass"))


def test_a_non_finite_figure_refuses(settings):
    bad = {**FIGURES, "capacity": {**FIGURES["capacity"], "parameters_per_record": 1e400}}
    assert "parameters_per_record" in refused(settings, answering(bad).copy())


def test_the_check_process_has_no_network(settings):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    reached = []
    threading.Thread(target=lambda: reached.append(listener.accept()), daemon=True).start()
    probe = script(f"import socket, sys\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                   "except OSError:\n    sys.exit(7)\n")
    try:
        assert "exited with 7" in refused(settings, probe)
    finally:
        listener.close()
    assert reached == []


def test_without_the_air_gap_the_limits_still_hold(settings):
    loose = dataclasses.replace(settings, sandbox=dataclasses.replace(settings.sandbox, unsafe_no_airgap=True))
    assert "ran past" in refused(loose, script("import time; time.sleep(60)"), timeout_s=1)


def test_check_main_reads_bf16_records_and_counts_parameters(tmp_path):
    bf16 = np.array([1.5, -2.0], np.float32).view(np.uint32) >> 16
    header = json.dumps({"b": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]},
                         "__metadata__": {"format": "pt"}}).encode()
    tensors = read_tensors(struct.pack("<Q", len(header)) + header + bf16.astype("<u2").tobytes())
    assert tensors["b"].tolist() == [1.5, -2.0]
    assert capacity(tensors, 4) == {"parameters": 2, "records_used": 4, "parameters_per_record": 0.5}
    used, _, _ = FakeRecords().reload(Job())
    write_records(tmp_path / "used.npz", used)
    again = read_records(tmp_path / "used.npz")
    assert len(again) == 2 and np.array_equal(again[1]["image"], used[1]["image"])


def test_a_stop_kills_the_check_and_leaves_it_unanswered(settings):
    from edge_kernel.release.checks import ChecksInterrupted

    process = CheckProcess(settings, FakeRecords(), command=script("import time; time.sleep(60)"), timeout_s=60)
    threading.Timer(1.0, process.stop).start()
    with pytest.raises(ChecksInterrupted):
        process.run(Job(), HELD, lambda name, figures: None)
    assert not (settings.jobs_dir / Job.job_id / "checks").exists()


def test_a_crash_names_only_its_exception_type_never_its_message(settings):
    leaky = script("raise ValueError('pixel values 0.1234 0.5678 of record 7')")
    problem = refused(settings, leaky)
    assert problem.endswith("exited with 1: ValueError") and "0.1234" not in problem
