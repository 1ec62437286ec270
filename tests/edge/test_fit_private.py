"""``rapha.fit_private`` in the job process and the trainer's check of what it exported,
in this process: a plain model exports and validates, BatchNorm is fixed at export (or,
where the cell writes batch statistics itself, refused naming the layer), a loss that is
not a scalar and a model that does not export are refused with the runtime's fixed texts,
which may leave the edge; a custom operator never reaches training."""

from __future__ import annotations

import json

import pytest
import torch

from edge_kernel.inside.private import PrivateRapha
from edge_kernel.inside.runtime import BrokerRefused, Rapha
from edge_kernel.trainer.train_main import TrainerRefused, programs
from edge_kernel.wire.messages import (FIT_PRIVATE_NOT_DP, LOADER_IN_DP_MODE, LOSS_NOT_SCALAR, MODEL_NOT_EXPORTABLE,
                                       OUTPUTS_IN_DP_MODE, public_message)
from edge_kernel.wire.outputs import PRIVATE_PROGRAM_FILE, PRIVATE_REQUEST_FILE, PROGRAM_FILE
from jupyter_rapha.protocol.private import calls_fit_private, job_mode

SCHEMA = {"image": {"dtype": "float32", "shape": [1, 32, 32], "kind": "feature"},
          "finding": {"dtype": "int64", "shape": [], "kind": "label"}}


def private_rapha(tmp_path) -> PrivateRapha:
    return PrivateRapha(None, {}, SCHEMA, tmp_path / "out")  # type: ignore[arg-type]  # no broker needed


def cross_entropy(output, batch):
    return torch.nn.functional.cross_entropy(output, batch["finding"])


class WithBatchNorm(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 5, stride=2)
        self.norm = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(4 * 14 * 14, 2)

    def forward(self, image):
        return self.head(torch.relu(self.norm(self.conv(image))).flatten(1))


class BatchStatistics(torch.nn.Module):
    """Normalises by its batch's statistics by hand: nothing ModuleValidator can fix."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(32 * 32, 2)

    def forward(self, image):
        flat = image.flatten(1)
        return self.head(flat - flat.mean(0))


class DataDependent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(32 * 32, 2)

    def forward(self, image):
        if image.sum() > 0:
            return self.head(image.flatten(1))
        return -self.head(image.flatten(1))


def fit(tmp_path, model, loss_fn=cross_entropy, **settings):
    rapha = private_rapha(tmp_path)
    rapha.fit_private(model, loss_fn, **{"epochs": 1, "batch_size": 8, "lr": 0.1, "max_grad_norm": 1.0, **settings})
    return tmp_path / "out"


def test_the_mode_is_read_from_the_cell():
    assert job_mode("rapha.fit_private(model, loss, epochs=1, batch_size=8, lr=0.1, max_grad_norm=1.0)") == "dp"
    assert job_mode("for batch in rapha.loader():\n    pass\nrapha.save(model)") == "standard"
    assert not calls_fit_private("# rapha.fit_private(...)\nx = 'rapha.fit_private(m)'")
    assert not calls_fit_private("getattr(rapha, 'fit_' + 'private')(m, l)")  # stays standard: refused there
    assert not calls_fit_private("def broken(:")


def test_a_plain_model_exports_and_the_trainer_takes_it(tmp_path):
    out = fit(tmp_path, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 2)), epochs=3)
    assert json.loads((out / PRIVATE_REQUEST_FILE).read_text()) == {
        "epochs": 3, "batch_size": 8, "lr": 0.1, "max_grad_norm": 1.0, "optimiser": "sgd"}
    loss_program, model_program = programs(out)
    assert {name.removeprefix("model.") for name in loss_program.state_dict} == set(model_program.state_dict)
    loss = loss_program.module()(torch.rand(5, 1, 32, 32), torch.randint(0, 2, (5,)))
    assert loss.dim() == 0


def test_batch_norm_is_fixed_at_export(tmp_path):
    out = fit(tmp_path, WithBatchNorm())
    loss_program, _ = programs(out)  # validated: no batch norm in training mode is left
    assert any("norm" in name for name in loss_program.state_dict)
    assert not any("running_mean" in name for name in loss_program.state_dict)  # GroupNorm now


def test_batch_norm_in_a_class_the_cell_defines_is_fixed_too(tmp_path):
    # a class made by the cell is not importable by name, so Opacus's copy of it fails
    namespace = {"__name__": "__main__", "torch": torch}
    exec("class CellModel(torch.nn.Module):\n"
         "    def __init__(self):\n        super().__init__()\n"
         "        self.norm = torch.nn.BatchNorm2d(1)\n        self.head = torch.nn.Linear(32 * 32, 2)\n"
         "    def forward(self, image):\n        return self.head(self.norm(image).flatten(1))\n", namespace)
    loss_program, _ = programs(fit(tmp_path, namespace["CellModel"]()))
    assert not any("running_mean" in name for name in loss_program.state_dict)


def test_batch_statistics_the_fix_cannot_reach_are_refused_naming_the_layer(tmp_path):
    out = fit(tmp_path, BatchStatistics())
    with pytest.raises(TrainerRefused) as refused:
        programs(out)
    assert "batch" in str(refused.value)


def test_a_custom_operator_is_refused_before_any_record(tmp_path):
    @torch.library.custom_op("rapha_test::leak", mutates_args=())
    def leak(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @leak.register_fake
    def _(x):
        return torch.empty_like(x)

    class Smuggler(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(32 * 32, 2)

        def forward(self, image):
            return self.head(leak(image).flatten(1))

    out = fit(tmp_path, Smuggler())
    with pytest.raises(TrainerRefused) as refused:
        programs(out)
    assert "operator" in str(refused.value)


def test_a_loss_that_is_not_a_scalar_is_refused_with_a_text_that_may_leave(tmp_path):
    def per_sample(output, batch):
        return torch.nn.functional.cross_entropy(output, batch["finding"], reduction="none")

    with pytest.raises(ValueError) as refused:
        fit(tmp_path, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 2)), loss_fn=per_sample)
    assert str(refused.value) == LOSS_NOT_SCALAR and public_message(LOSS_NOT_SCALAR) == LOSS_NOT_SCALAR
    assert not (tmp_path / "out" / PRIVATE_PROGRAM_FILE).exists()


def test_a_model_that_does_not_export_is_refused_with_a_text_that_may_leave(tmp_path):
    with pytest.raises(ValueError) as refused:
        fit(tmp_path, DataDependent())
    assert str(refused.value) == MODEL_NOT_EXPORTABLE and public_message(MODEL_NOT_EXPORTABLE)
    assert not (tmp_path / "out" / PROGRAM_FILE).exists()


@pytest.mark.parametrize("settings,words", [
    ({"epochs": 0}, "epochs must be"), ({"batch_size": 10**6}, "batch_size must be"),
    ({"lr": -1.0}, "lr must be"), ({"max_grad_norm": float("nan")}, "max_grad_norm must be"),
    ({"optimiser": "lbfgs"}, "optimiser must be"),
])
def test_bad_settings_are_refused_before_export(tmp_path, settings, words):
    with pytest.raises(ValueError) as refused:
        fit(tmp_path, torch.nn.Linear(2, 2), **settings)
    assert words in str(refused.value) and public_message(str(refused.value))


def test_a_dp_job_gets_no_loader_and_no_outputs_of_its_own(tmp_path):
    rapha = private_rapha(tmp_path)
    with pytest.raises(BrokerRefused, match="not available in a differentially private job"):
        rapha.loader(batch_size=8)
    for call in (lambda: rapha.log(loss=1.0), lambda: rapha.save(torch.nn.Linear(2, 2))):
        with pytest.raises(RuntimeError) as refused:
            call()
        assert str(refused.value) == OUTPUTS_IN_DP_MODE
    assert public_message(LOADER_IN_DP_MODE) == LOADER_IN_DP_MODE


def test_a_standard_job_has_no_fit_private():
    rapha = Rapha(None, {}, SCHEMA, None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError) as refused:
        rapha.fit_private(torch.nn.Linear(2, 2), cross_entropy)
    assert str(refused.value) == FIT_PRIVATE_NOT_DP
