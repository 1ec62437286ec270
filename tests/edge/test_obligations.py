"""Policy obligations are enforced by the edge, and an obligation it cannot enforce denies."""

from __future__ import annotations

import pytest

from edge_kernel.gates.obligations import enforceable
from jupyter_rapha.protocol.errors import PolicyDenied
from jupyter_rapha.protocol.jobspec import parse_jobspec
from tests.edge.conftest_data import HMAC_KEY, make_spec
from tests.protocol.test_jobspec import spec_dict


def test_known_obligations_become_limits():
    limits = enforceable({"max_epochs": 3, "max_seconds": 30, "dp_required": False})
    assert (limits.max_epochs, limits.max_seconds) == (3, 30)
    spec = parse_jobspec(spec_dict())
    assert limits.apply(spec).budget.max_seconds == 30
    assert enforceable({"max_seconds": 600}).apply(spec).budget.max_seconds == 60  # never raised


@pytest.mark.parametrize("obligations,words", [
    ({"dp_required": True}, "differential privacy"), ({"watermark": True}, "watermark"),
    ({"max_epochs": 0}, "malformed"), ({"max_epochs": "3"}, "malformed"),
])
def test_unenforceable_obligations_deny(obligations, words):
    with pytest.raises(PolicyDenied) as denied:
        enforceable(obligations)
    assert words in " ".join(denied.value.reasons)


def test_the_broker_ends_epochs_past_the_obligation(synth_entry, synth_folder, settings, tmp_path):  # noqa: F811
    from edge_kernel.sandbox.runner import run_job
    cell = ("seen = 0\nfor epoch in range(rapha.epochs):\n    for b in rapha.loader(batch_size=8, shuffle=False):\n"
            "        seen += len(b['image'])\nrapha.log(seen=seen)\nimport torch\nrapha.save({'w': torch.zeros(1)})\n")
    spec = make_spec(cell, params={"epochs": 5}, max_records=16)
    outcome = run_job(spec, synth_entry, synth_folder, ["image"], HMAC_KEY, tmp_path / "job", settings, max_epochs=2)
    assert outcome.status == "completed", outcome
    assert outcome.metrics["seen"] == [32.0]  # 2 epochs of 16, the last 3 empty
