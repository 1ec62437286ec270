"""The outbox's publisher puts a mined anchor into a released receipt; a job that ended
without a release (any terminal state but completed, refused included) drops it, and one
still on its way (running, held) is asked again later."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from edge_kernel.anchor.publish import ReceiptPublisher
from jupyter_rapha.protocol.contract import JobState
from jupyter_rapha.protocol.errors import NotFound


@dataclass
class _Job:
    state: str
    receipt: dict[str, Any] | None = None


class _Store:
    """The two store calls the publisher makes."""

    def __init__(self, job: _Job | None) -> None:
        self.job = job

    def get(self, job_id: str) -> _Job:
        if self.job is None:
            raise NotFound(job_id)
        return self.job


@pytest.mark.parametrize("state,answer", [
    (JobState.REFUSED, "dropped"), (JobState.DENIED, "dropped"), (JobState.FAILED, "dropped"),
    (JobState.CANCELLED, "dropped"), (JobState.HELD, "later"), (JobState.RUNNING, "later"),
    (JobState.SUBMITTED, "later"), (JobState.COMPLETED, "later"),  # completed, its receipt not yet stored
])
def test_what_the_publisher_answers_for_each_state(tmp_path, state, answer):
    publisher = ReceiptPublisher(_Store(_Job(state)), audit=None, release_dir=lambda job_id: tmp_path)
    assert publisher("j" * 32, "0" * 64, {"tx_hash": "0x1"}) == answer


def test_an_unknown_job_is_dropped(tmp_path):
    assert ReceiptPublisher(_Store(None), None, lambda job_id: tmp_path)("j" * 32, "0" * 64, {}) == "dropped"
