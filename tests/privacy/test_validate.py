"""The program check: the quickstart program passes; batch norm in training mode is
refused with the layer's name and the pointer to ModuleValidator.fix, and fix_model makes
it pass; values computed over the batch flowing back into samples, scans along the batch,
a fixed batch size and a non-aten operator are refused; batch norm in eval mode and a
softmax over classes are not. The functional per-sample check agrees."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edge_kernel.privacy.errors import PrivacyError
from edge_kernel.privacy.validate import check_per_sample, check_private_program, fix_model
from tests.privacy.models import LossModule, blobs, export, quickstart_loss_module, quickstart_model_class

IMAGES, LABELS = blobs(8)


class Normed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=4)
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.conv(x)).flatten(1))


class Head(nn.Module):
    """A linear model whose features go through ``mix`` first."""

    def __init__(self, mix) -> None:
        super().__init__()
        self.mix = mix
        self.head = nn.Linear(32 * 32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mix(x.flatten(1)))


def test_the_quickstart_program_passes_both_checks():
    module = quickstart_loss_module()
    program = export(module, IMAGES, LABELS)
    check_private_program(program)
    check_private_program(program.module())
    check_per_sample(program.module(), (IMAGES, LABELS))
    check_per_sample(module, (IMAGES, LABELS))


def test_batch_norm_in_training_is_refused_with_the_layer_and_the_fix():
    module = LossModule(Normed())
    for program in (export(module, IMAGES, LABELS), export(module, IMAGES, LABELS).run_decompositions()):
        says = r"layer 'norm' \(BatchNorm2d\) is batch norm in training"
        with pytest.raises(PrivacyError, match=says) as caught:
            check_private_program(program)
        assert "GroupNorm" in caught.value.diagnostics()
        assert "opacus.validators.ModuleValidator.fix" in caught.value.diagnostics()
    with pytest.raises(PrivacyError, match="mixes samples"):
        check_per_sample(module, (IMAGES, LABELS))


def test_fix_model_replaces_batch_norm_and_the_program_passes():
    fixed = fix_model(LossModule(Normed()))
    assert isinstance(fixed.model.norm, nn.GroupNorm)
    check_private_program(export(fixed, IMAGES, LABELS))
    check_per_sample(fixed, (IMAGES, LABELS))


def test_batch_norm_in_eval_mode_normalises_by_fixed_statistics_and_passes():
    module = LossModule(Normed()).eval()
    check_private_program(export(module, IMAGES, LABELS))
    check_per_sample(module, (IMAGES, LABELS))


@pytest.mark.parametrize(("mix", "says"), [
    (lambda f: f - f.mean(0), "uses a value computed over the whole batch"),
    (lambda f: f / f.sum(0, keepdim=True), "uses a value computed over the whole batch"),
    (lambda f: f + f[0], "uses a value computed over the whole batch"),
    (lambda f: f.cumsum(0), "combines the samples along the batch dimension"),
    (lambda f: f.softmax(0), "combines the samples along the batch dimension"),
], ids=["minus-batch-mean", "over-batch-sum", "plus-sample-0", "cumsum", "softmax-over-batch"])
def test_a_value_across_the_batch_is_refused(mix, says):
    module = LossModule(Head(mix))
    with pytest.raises(PrivacyError, match=says):
        check_private_program(export(module, IMAGES, LABELS))
    with pytest.raises(PrivacyError, match="mixes samples"):
        check_per_sample(module, (IMAGES, LABELS))


def test_per_sample_operations_pass():
    module = LossModule(Head(lambda f: (f - f.mean(1, keepdim=True)).softmax(1) + f.cumsum(1)))
    check_private_program(export(module, IMAGES, LABELS))
    check_per_sample(module, (IMAGES, LABELS))


def test_a_fixed_batch_size_is_refused():
    program = torch.export.export(quickstart_loss_module(), (IMAGES, LABELS))
    with pytest.raises(PrivacyError, match="exported with a fixed batch size") as caught:
        check_private_program(program)
    assert 'torch.export.Dim("batch", min=1)' in caught.value.diagnostics()


@torch.library.custom_op("rapha_test::scaled", mutates_args=())
def scaled(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@scaled.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def test_a_custom_operator_is_refused():
    module = LossModule(Head(scaled))
    with pytest.raises(PrivacyError, match=r"calls rapha_test.scaled.default, which is not an aten operator"):
        check_private_program(export(module, IMAGES, LABELS))


class PerSampleLoss(LossModule):
    def forward(self, image: torch.Tensor, finding: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(self.model(image), finding, reduction="none")


class TwoLosses(LossModule):
    def forward(self, image: torch.Tensor, finding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = nn.functional.cross_entropy(self.model(image), finding)
        return loss, loss


@pytest.mark.parametrize("wrapper", [PerSampleLoss, TwoLosses])
def test_a_loss_that_is_not_one_scalar_is_refused(wrapper):
    program = export(wrapper(quickstart_model_class()()), IMAGES, LABELS)
    for form in (program, program.module()):
        with pytest.raises(PrivacyError, match="the loss must be one scalar tensor") as caught:
            check_private_program(form)
        assert ".mean()" in caught.value.diagnostics()
