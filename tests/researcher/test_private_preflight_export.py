"""The preflight of a DP cell exports its model and loss here, on schema-shaped synthetic
records, and checks the program with the check the edge's trainer runs: a model it could
not train privately is stopped before anything is sent, naming the layer to change; a
BatchNorm layer is fixed as at the edge and named; the dry run's privacy budget is shown."""

from __future__ import annotations

import pytest

from jupyter_rapha.dispatch import PreflightStopped, check_cell
from jupyter_rapha.private_preflight import check_private_cell
from jupyter_rapha.training import TrainRequest
from tests.researcher.test_preflight import ALICE, published

SCHEMA = {"image": {"dtype": "float32", "shape": [1, 8, 8], "kind": "feature"},
          "finding": {"dtype": "int64", "shape": [], "kind": "label"}}
CELL = """import torch
from torch import nn
import torch.nn.functional as F


class FunctionalNorm(nn.Module):
    def forward(self, x):
        return F.batch_norm(x, None, None, training=True)


model = MODEL
def loss_fn(output, batch):
    return LOSS
rapha.fit_private(model, loss_fn, epochs=1, batch_size=8, lr=0.1, max_grad_norm=1.0)
"""
LINEAR = "nn.Sequential(nn.Flatten(), nn.Linear(64, 2))"
CROSS_ENTROPY = 'F.cross_entropy(output, batch["finding"])'


def cell(model: str = LINEAR, loss: str = CROSS_ENTROPY) -> str:
    return CELL.replace("MODEL", model).replace("LOSS", loss)


def test_a_model_the_trainer_can_train_passes_and_says_so():
    found = check_private_cell(cell(), SCHEMA)
    assert found.trainable, found.refusal
    assert any("can be trained privately" in note for note in found.notes)


def test_a_batch_norm_layer_is_fixed_as_at_the_edge_and_named():
    found = check_private_cell(cell(model="nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), "
                                          "nn.Linear(4 * 6 * 6, 2))"), SCHEMA)
    assert found.trainable, found.refusal
    assert any("layer '1' (BatchNorm2d) becomes GroupNorm" in note for note in found.notes)


def test_batch_norm_in_training_mode_that_cannot_be_fixed_is_refused_naming_the_layer():
    found = check_private_cell(cell(model="nn.Sequential(nn.Conv2d(1, 4, 3), FunctionalNorm(), nn.Flatten(), "
                                          "nn.Linear(4 * 6 * 6, 2))"), SCHEMA)
    assert not found.trainable
    assert "layer '1' (FunctionalNorm) is batch norm in training mode" in str(found.refusal)
    assert "GroupNorm" in str(found.refusal)


def test_a_loss_that_is_not_a_scalar_is_refused_with_its_shape():
    found = check_private_cell(cell(loss='F.cross_entropy(output, batch["finding"], reduction="none")'), SCHEMA)
    assert not found.trainable
    assert "returns a tensor of shape (2,), not a floating-point scalar" in str(found.refusal)
    assert ".mean()" in str(found.refusal)


def test_a_cell_that_reads_records_is_refused_as_in_dp_mode():
    code = "for batch in rapha.loader(batch_size=8):\n    pass\n" + cell()
    found = check_private_cell(code, SCHEMA, first_line=2)
    assert not found.trainable
    assert "rapha.loader is refused" in str(found.refusal) and "line 2" in str(found.refusal)


def test_a_cell_that_never_reaches_fit_private_is_refused():
    found = check_private_cell("import torch\n", SCHEMA)
    assert "without calling rapha.fit_private" in str(found.refusal)


class PreflightGateway:
    """The gateway's read side as a DP cell's preflight uses it; ``submit`` records sends."""

    def __init__(self) -> None:
        self.sent: list[object] = []
        self.bundle = published()

    def edges(self) -> list[dict[str, object]]:
        return [{"name": "north", "edge_id": "north", "datasets": ["synthetic-cxr"]}]

    def datasets(self) -> list[dict[str, object]]:
        offer = {"schema": SCHEMA, "sensitivity": "special-category", "max_records": 100}
        return [{"name": "synthetic-cxr", "offers": {"north": offer}}]

    def policy(self, site: str) -> dict[str, object]:
        return {"modules": dict(self.bundle.modules), "data_json": self.bundle.data_json, "researcher": ALICE,
                "edge": {"demo": False, "unsafe": []}}

    def submit(self, submission: object) -> list[dict[str, object]]:
        self.sent.append(submission)
        return []


def request(code: str) -> TrainRequest:
    return TrainRequest(code=code, dataset="synthetic-cxr", budget=100, epochs=1, params={}, fields=None,
                        max_seconds=600, cell_first_line=2)


def test_check_cell_shows_the_budget_and_the_export_of_a_trainable_model():
    said: list[str] = []
    check_cell(PreflightGateway(), request(cell()), None, said.append)
    assert any("privacy budget of synthetic-cxr: epsilon 8, delta 0.001" in line for line in said), said
    assert any("can be trained privately" in line for line in said), said


def test_check_cell_stops_a_model_the_trainer_cannot_train_before_anything_is_sent():
    gateway = PreflightGateway()
    with pytest.raises(PreflightStopped) as stopped:
        check_cell(gateway, request(cell(model="nn.Sequential(FunctionalNorm(), nn.Flatten(), nn.Linear(64, 2))")),
                   None, lambda line: None)
    assert any("layer '0' (FunctionalNorm)" in reason for reason in stopped.value.reasons)
    assert gateway.sent == []


def test_the_preflight_leaves_the_kernels_random_state_as_it_was():
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    assert check_private_cell(cell().replace("model = ", "torch.manual_seed(0)\nmodel = ", 1), SCHEMA).trainable
    assert torch.equal(torch.rand(3), expected)


def test_a_batch_norm_the_fix_leaves_is_refused_not_said_to_be_fixed():
    found = check_private_cell(cell(model="nn.Sequential(nn.BatchNorm2d(1, affine=False), nn.Flatten(), "
                                          "nn.Linear(64, 2))"), SCHEMA)
    assert not found.trainable and "layer '0' (BatchNorm2d) is batch norm in training mode" in str(found.refusal)
    assert not any("becomes" in note for note in found.notes)
