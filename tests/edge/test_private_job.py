"""DP mode end to end at the runner: the job process exports the model and the loss and
sees no record, the edge's trainer (its own process, under the air-gap) trains them with
DP-SGD on lots the broker meters, and only the trainer's parameters come out."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import torch
from safetensors.torch import load

from edge_kernel.data.sources import open_source
from edge_kernel.gates.obligations import PrivacyBudget
from edge_kernel.sandbox.runner import run_job
from edge_kernel.wire.messages import LOADER_IN_DP_MODE
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


rapha.fit_private(model, loss_fn, epochs=8, batch_size=16, lr=2.0, max_grad_norm=1.0)
"""


def run(cell, synth_entry, synth_folder, settings, tmp_path, budget=BUDGET, **kwargs):
    spec = make_spec(cell, max_seconds=240, **kwargs)
    return run_job(spec, synth_entry, synth_folder, ["image", "finding"], HMAC_KEY, tmp_path / "job", settings,
                   privacy=budget)


def test_a_dp_job_trains_in_the_trainer_and_only_its_parameters_come_out(synth_entry, synth_folder, settings,
                                                                         tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edge_kernel.sandbox.runner")
    outcome = run(DP_CELL, synth_entry, synth_folder, settings, tmp_path)
    # The trainer's lots came through the decoder pool (the job's feeder, started for the trainer).
    [pool] = [r.args for r in caplog.records if "records decoded" in r.getMessage()]
    assert pool[1] > 0, pool
    assert outcome.status == "completed", (outcome.status, outcome.error, outcome.refusal, outcome.fault)
    privacy = outcome.privacy
    assert privacy is not None and privacy_problem(privacy) == "", privacy
    assert privacy["epsilon_spent"] <= BUDGET.epsilon and privacy["delta"] == BUDGET.delta
    assert privacy["steps"] == privacy["steps_planned"] == 8 * 4
    assert privacy["parameters_sha256"] == state_digest(outcome.weights)
    assert list(outcome.metrics) == ["epsilon"] and len(outcome.metrics["epsilon"]) == 8
    assert outcome.metrics["epsilon"] == sorted(outcome.metrics["epsilon"])
    assert outcome.meter.records_used > 0 and outcome.program is not None
    # The trainer trained: the released weights' loss on the cohort is below the start's.
    start, trained = loss_on(synth_entry, synth_folder, None), loss_on(synth_entry, synth_folder, outcome.weights)
    assert trained < start * 0.5, (start, trained)


def loss_on(dataset, folder, weights):
    """The quickstart model's mean cross-entropy on the dataset (its seeded start without
    ``weights``): what the edge's trainer was asked to lower."""
    namespace: dict = {}
    exec(MODEL, namespace)
    model = namespace["model"]
    if weights is not None:
        model.load_state_dict(load(weights))
    source = open_source(dataset, folder, ["image", "finding"], HMAC_KEY)
    records = [source.load(ref) for ref in source.index().records]
    images = torch.from_numpy(np.stack([r["image"] for r in records]))
    labels = torch.from_numpy(np.stack([r["finding"] for r in records]))
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(images), labels))


# Everything a cell might try in its own process in DP mode: read records, forge the
# outputs (weights, a privacy section, the trainer's programs), switch the noise off in the
# DP library it can import. None of it reaches what is released.
ATTACK_CELL = MODEL + """
import json, pathlib
try:
    next(iter(rapha.loader(batch_size=8)))
    reached = True
except Exception as refused:
    reached = str(refused)
assert reached == LOADER_TEXT, reached
import edge_kernel.privacy.dpsgd as dpsgd
dpsgd.draw_noise = lambda shape, std, generator: torch.zeros(shape)
dpsgd.PrivateTrainer.budget_left = lambda self: True
out = pathlib.Path("out"); out.mkdir(exist_ok=True)
forged = {name: torch.full_like(value, 7.0) for name, value in model.state_dict().items()}
from safetensors.torch import save_file
save_file(forged, str(out / "weights.safetensors"))
(out / "metrics.json").write_text(json.dumps({"epsilon": [0.0], "loss": [0.0]}))
(out / "privacy.json").write_text(json.dumps({"epsilon_spent": 0.0}))


def loss_fn(output, batch):
    return nn.functional.cross_entropy(output, batch["finding"])


rapha.fit_private(model, loss_fn, epochs=1, batch_size=16, lr=0.5, max_grad_norm=1.0)
""".replace("LOADER_TEXT", repr(LOADER_IN_DP_MODE))


def test_a_cell_that_reads_records_patches_the_trainer_or_forges_outputs_changes_nothing_released(
        synth_entry, synth_folder, settings, tmp_path):
    outcome = run(ATTACK_CELL, synth_entry, synth_folder, settings, tmp_path)
    assert outcome.status == "completed", (outcome.status, outcome.error, outcome.refusal, outcome.fault)
    privacy = outcome.privacy
    assert privacy["parameters_sha256"] == state_digest(outcome.weights)  # the trainer's own parameters
    released = load(outcome.weights)
    assert not any(torch.equal(value, torch.full_like(value, 7.0)) for value in released.values())
    assert privacy["steps"] == privacy["steps_planned"] == 4 and privacy["noise_multiplier"] > 0.5
    assert privacy["epsilon_spent"] <= BUDGET.epsilon
    assert list(outcome.metrics) == ["epsilon"] and outcome.metrics["epsilon"] != [0.0]


def test_the_broker_refuses_a_dp_cell_that_goes_round_its_runtime(synth_entry, synth_folder, settings, tmp_path):
    # the cell builds the edge runtime's own loader on its channel: the broker says no
    cell = ("from edge_kernel.inside.runtime import RaphaDataLoader\n"
            "RaphaDataLoader(rapha._channel, 8, True, 0)\nrapha.fit_private(None, None)\n")
    outcome = run(cell, synth_entry, synth_folder, settings, tmp_path)
    assert outcome.status == "failed" and outcome.privacy is None and outcome.weights is None
    assert outcome.error["message"] == LOADER_IN_DP_MODE and outcome.error["line"] == 2
    assert outcome.meter.records_used == 0
