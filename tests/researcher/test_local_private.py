"""``rapha.fit_private`` in the --local dry run: the same call trains with DP-SGD on the
synthetic cohort, and a model or loss the edge could not train privately is refused here,
before anything is sent, naming what to change."""

from __future__ import annotations

import pytest
import torch

from jupyter_rapha.local import CellFailed, make_runtime, run_local
from jupyter_rapha.result import load_state_dict

pytestmark = pytest.mark.slow

SCHEMA = {"image": {"dtype": "float32", "shape": [1, 32, 32], "kind": "feature"},
          "finding": {"dtype": "int64", "shape": [], "kind": "label"}}
CELL = """import torch
from torch import nn


class Branching(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(32 * 32, 2)

    def forward(self, x):
        return self.head(x.flatten(1)) if x.sum() > 0 else -self.head(x.flatten(1))


torch.manual_seed(0)
model = MODEL
def loss_fn(output, batch):
    return LOSS
rapha.fit_private(model, loss_fn, epochs=2, batch_size=16, lr=0.5, max_grad_norm=1.0)
"""
LINEAR = "nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 2))"
CROSS_ENTROPY = 'nn.functional.cross_entropy(output, batch["finding"])'


def cell(model=LINEAR, loss=CROSS_ENTROPY):
    return CELL.replace("MODEL", model).replace("LOSS", loss)


def run(code):
    return run_local(code, {}, make_runtime(SCHEMA, None, 32, {}, 1))


def test_the_local_run_trains_privately_and_reports_epsilon_per_epoch():
    outcome = run(cell())
    assert list(outcome.metrics) == ["epsilon"] and len(outcome.metrics["epsilon"]) == 2
    assert 0 < outcome.metrics["epsilon"][0] < outcome.metrics["epsilon"][1] <= 8.0 + 1e-6
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 2))
    model.load_state_dict(load_state_dict(outcome.weights))  # the researcher's model takes them


def test_batch_norm_is_fixed_as_at_the_edge():
    outcome = run(cell(model="nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), "
                             "nn.Linear(4 * 30 * 30, 2))"))
    assert not any("running_mean" in name for name in load_state_dict(outcome.weights))  # GroupNorm now


def test_a_loss_that_is_not_a_scalar_is_refused_here():
    with pytest.raises(CellFailed, match="must return a scalar"):
        run(cell(loss='nn.functional.cross_entropy(output, batch["finding"], reduction="none")'))


def test_a_model_that_does_not_export_is_refused_here():
    with pytest.raises(CellFailed, match="torch.export"):
        run(cell(model="Branching()"))


def test_bad_settings_are_refused_here():
    with pytest.raises(CellFailed, match="max_grad_norm must be a positive number"):
        run(cell().replace("max_grad_norm=1.0", "max_grad_norm=0"))


