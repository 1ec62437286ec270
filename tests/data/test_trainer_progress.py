"""A DP job's progress: the edge's trainer says with each lot which step of how many and
which epoch of fit_private's it is for; the broker shows those counts (plain whole numbers
only) beside the records it metered, and ignores anything else."""

from __future__ import annotations

import socket
import threading

from edge_kernel.data.broker import Broker
from edge_kernel.data.dicom_folder import DicomFolderSource
from edge_kernel.wire.channel import Channel
from tests.edge.conftest_data import HMAC_KEY


def _lots(broker: Broker, requests: list[dict[str, object]]) -> list[dict[str, object]]:
    broker_end, trainer_end = socket.socketpair()
    thread = threading.Thread(target=broker.serve, args=(broker_end,), kwargs={"trainer": True}, daemon=True)
    thread.start()
    channel = Channel(trainer_end, max_payload_bytes=1 << 30)
    progress = []
    for request in requests:
        channel.send(request)
        assert channel.recv().header["ok"]
        progress.append(broker.progress())
    trainer_end.close()
    thread.join(5)
    return progress


def test_the_trainers_steps_and_epochs_are_shown_and_malformed_counts_ignored(synth_folder, synth_entry):
    source = DicomFolderSource(synth_folder, synth_entry, ["image", "finding"], HMAC_KEY)
    broker = Broker(source, source.index(), 20, 3)
    first, second, third = _lots(broker, [
        {"op": "lot", "indices": [0, 3], "step": 1, "steps": 12, "epoch": 1, "epochs": 2},
        {"op": "lot", "indices": [1], "step": 7, "steps": 12, "epoch": 2, "epochs": 2},
        {"op": "lot", "indices": [2], "step": True, "steps": -1, "epoch": "2", "epochs": 2},
    ])
    assert first == {"records_used": 2, "batches": 1, "epochs": 1, "epochs_total": 2, "steps": 1,
                     "steps_total": 12, "cohort_size": 20}
    assert second["steps"] == 7 and second["epochs"] == 2 and second["records_used"] == 3
    assert third["steps"] == 7 and third["batches"] == 3  # the malformed counts changed nothing shown


def test_the_budget_shows_while_a_dp_job_runs_and_the_spent_once_its_receipt_releases_it():
    from edge_kernel.gates.obligations import Limits, PrivacyBudget
    from edge_kernel.jobs import budget_progress, spent_progress

    private = Limits(None, None, privacy=PrivacyBudget(8.0, 0.001))
    assert budget_progress(private) == {"epsilon_target": 8.0, "delta": 0.001}
    assert budget_progress(Limits(None, None)) == {}  # a standard job: nothing about privacy
    section = {"mechanism": "DP-SGD", "epsilon_target": 8.0, "epsilon_spent": 7.99, "delta": 0.001, "steps": 32}
    assert spent_progress({"privacy": section}) == {"epsilon_target": 8.0, "epsilon_spent": 7.99, "delta": 0.001}
    assert spent_progress({"job": {}}) == {}
