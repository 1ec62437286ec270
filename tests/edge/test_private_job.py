"""DP mode end to end at the runner: the job process exports the model and the loss and
sees no record, the edge's trainer (its own process, under the air-gap) trains them with
DP-SGD on lots the broker meters, and only the trainer's parameters come out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_kernel.gates.obligations import PrivacyBudget
from edge_kernel.sandbox.runner import run_job
from jupyter_rapha.protocol.private import privacy_problem, state_digest
from tests.edge.conftest_data import HMAC_KEY, make_spec

pytestmark = pytest.mark.slow

BUDGET = PrivacyBudget(epsilon=8.0, delta=1e-3)

MODEL = """import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((2, 2)))
        self.head = nn.Linear(16 * 4, 2)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


torch.manual_seed(0)
model = TinyCNN()
"""

DP_CELL = MODEL + """
def loss_fn(output, batch):
    return nn.functional.cross_entropy(output, batch["finding"])


rapha.fit_private(model, loss_fn, epochs=4, batch_size=16, lr=0.5, max_grad_norm=1.0)
"""


def run(cell, synth_entry, synth_folder, settings, tmp_path, budget=BUDGET, **kwargs):
    spec = make_spec(cell, max_seconds=240, **kwargs)
    return run_job(spec, synth_entry, synth_folder, ["image", "finding"], HMAC_KEY, tmp_path / "job", settings,
                   privacy=budget)


def test_a_dp_job_trains_in_the_trainer_and_only_its_parameters_come_out(synth_entry, synth_folder, settings,
                                                                         tmp_path):
    outcome = run(DP_CELL, synth_entry, synth_folder, settings, tmp_path)
    assert outcome.status == "completed", (outcome.status, outcome.error, outcome.refusal, outcome.fault)
    privacy = outcome.privacy
    assert privacy is not None and privacy_problem(privacy) == "", privacy
    assert privacy["epsilon_spent"] <= BUDGET.epsilon and privacy["delta"] == BUDGET.delta
    assert privacy["steps"] == privacy["steps_planned"] == 4 * 4
    assert privacy["parameters_sha256"] == state_digest(outcome.weights)
    assert list(outcome.metrics) == ["epsilon"] and len(outcome.metrics["epsilon"]) == 4
    assert outcome.metrics["epsilon"] == sorted(outcome.metrics["epsilon"])
    assert outcome.meter.records_used > 0 and outcome.program is not None
    print(json.dumps(privacy, indent=1))
