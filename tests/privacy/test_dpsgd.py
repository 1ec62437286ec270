"""One DP-SGD step, checked by hand: per-sample gradients against a loop of single-sample
backward passes, the step against clip + sum + noise + divide by the expected lot size
with the same generator (with and without noise), and Opacus's own DPOptimizer doing the
same step; Poisson lots, the empty lot, the budget stop and bad configurations."""

from __future__ import annotations

import math

import pytest
import torch
from opacus.optimizers import DPOptimizer
from torch import nn

from edge_kernel.privacy.dpsgd import CLIP_EPSILON, DPConfig, PrivateTrainer, draw_noise
from edge_kernel.privacy.errors import PrivacyError
from tests.privacy.models import blobs, quickstart_loss_module


class TinyLoss(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.layer = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(self.layer(x), y)


def config(**changes: object) -> DPConfig:
    fields: dict[str, object] = {"epochs": 2, "batch_size": 4, "lr": 0.5, "max_grad_norm": 0.3, "epsilon": 3.0,
                                 "delta": 1e-5, "seed": 11}
    fields.update(changes)
    return DPConfig(**fields)  # type: ignore[arg-type]


def lot(size: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return 3 * torch.randn(size, 3, generator=generator), torch.randint(0, 2, (size,), generator=generator)


def loop_gradients(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    found = []
    for i in range(len(x)):
        module.zero_grad()
        module(x[i:i + 1], y[i:i + 1]).backward()
        found.append({name: p.grad.detach().clone() for name, p in module.named_parameters()})
    return found


def by_hand(module: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: DPConfig,
            noise: float) -> dict[str, torch.Tensor]:
    """clip each sample's gradient to max_grad_norm, sum, add the trainer's noise (its
    generator is seeded seed + 1), divide by the expected lot size, one SGD step."""
    grads = loop_gradients(module, x, y)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    after = {}
    norms = [math.sqrt(sum(float(g.pow(2).sum()) for g in sample.values())) for sample in grads]
    for name, p in module.named_parameters():
        total = sum(sample[name] * min(1.0, cfg.max_grad_norm / (norm + CLIP_EPSILON))
                    for sample, norm in zip(grads, norms, strict=True))
        total = total + draw_noise(p.shape, noise * cfg.max_grad_norm, generator)
        after[name] = p.detach() - cfg.lr * total / cfg.batch_size
    return after


def test_per_sample_gradients_equal_a_loop_of_single_samples():
    module = quickstart_loss_module()
    images, labels = blobs(6)
    trainer = PrivateTrainer(module, 20, config())
    grads, losses = trainer.per_sample_gradients((images, labels))
    for i, expected in enumerate(loop_gradients(module, images, labels)):
        for name, value in expected.items():
            torch.testing.assert_close(grads[name][i], value, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(losses, torch.stack([module(images[i:i + 1], labels[i:i + 1]).detach()
                                                    for i in range(6)]), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("noise", [0.0, None], ids=["no-noise", "noise"])
def test_a_step_is_clip_sum_noise_divide_by_hand(noise):
    module, (x, y) = TinyLoss(), lot()
    cfg = config()
    trainer = PrivateTrainer(module, 20, cfg)
    if noise is not None:
        trainer.noise_multiplier = noise
    assert any(float(g.norm()) > cfg.max_grad_norm for g in loop_gradients(module, x, y)[0].values())  # clipping bites
    expected = by_hand(module, x, y, cfg, trainer.noise_multiplier)
    loss = trainer.step((x, y))
    for name, value in trainer.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=1e-5)
    assert loss == pytest.approx(float(module(x, y).detach()), rel=1e-5)  # the lot's mean loss, before the step
    assert trainer.steps_done == 1


def test_a_noiseless_step_equals_opacus_dpoptimizer():
    module, (x, y) = TinyLoss(), lot()
    cfg = config()
    trainer = PrivateTrainer(module, 20, cfg)
    trainer.noise_multiplier = 0.0
    trainer.step((x, y))
    reference = TinyLoss()
    optimiser = DPOptimizer(torch.optim.SGD(reference.parameters(), lr=cfg.lr), noise_multiplier=0.0,
                            max_grad_norm=cfg.max_grad_norm, expected_batch_size=cfg.batch_size)
    for p, sample_grads in zip(reference.parameters(), zip(*(g.values() for g in loop_gradients(reference, x, y)),
                                                              strict=True), strict=True):
        p.grad_sample = torch.stack(sample_grads)
    optimiser.step()
    for name, p in reference.named_parameters():
        torch.testing.assert_close(trainer.state_dict()[f"{name}"], p.detach(), atol=1e-6, rtol=1e-5)


def test_the_trainer_holds_its_own_copy_of_the_parameters():
    module, (x, y) = TinyLoss(), lot()
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    trainer = PrivateTrainer(module, 20, config())
    trainer.step((x, y))
    assert all(torch.equal(p, before[name]) for name, p in module.named_parameters())  # the module is untouched
    state = trainer.state_dict()
    state["layer.weight"].add_(100.0)  # a copy: changing it changes nothing in the trainer
    assert not torch.equal(trainer.state_dict()["layer.weight"], state["layer.weight"])


def test_an_empty_lot_still_takes_a_noised_step():
    module = TinyLoss()
    trainer = PrivateTrainer(module, 20, config())
    before = trainer.state_dict()
    loss = trainer.step((torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64)))
    assert math.isnan(loss) and trainer.steps_done == 1
    assert not torch.equal(trainer.state_dict()["layer.weight"], before["layer.weight"])


def test_poisson_lots_have_the_expected_size_and_a_urandom_seed_by_default():
    trainer = PrivateTrainer(TinyLoss(), 1000, config(batch_size=100, epochs=1))
    assert trainer.sample_rate == 0.1 and trainer.steps_planned == 10
    lots = [trainer.poisson_indices() for _ in range(200)]
    assert all(lot == sorted(set(lot)) and all(0 <= i < 1000 for i in lot) for lot in lots)
    sizes = torch.tensor([len(lot) for lot in lots], dtype=torch.float64)
    assert abs(float(sizes.mean()) - 100) < 3 and 6 < float(sizes.std()) < 13  # binomial(1000, 0.1): sd 9.5
    seeded = [PrivateTrainer(TinyLoss(), 1000, config(batch_size=100)).poisson_indices() for _ in range(2)]
    assert seeded[0] == seeded[1]
    unseeded = [PrivateTrainer(TinyLoss(), 1000, config(batch_size=100, seed=None)).poisson_indices()
                for _ in range(2)]
    assert unseeded[0] != unseeded[1]


def test_the_trainer_stops_when_the_budget_is_spent():
    module, (x, y) = TinyLoss(), lot()
    trainer = PrivateTrainer(module, 8, config(epochs=2, batch_size=4))
    assert trainer.steps_planned == 4 and trainer.epsilon_spent() == 0.0
    spent = []
    while trainer.budget_left():
        trainer.step((x, y))
        spent.append(trainer.epsilon_spent())
    assert len(spent) == 4 and spent == sorted(spent) and spent[-1] <= 3.0
    with pytest.raises(PrivacyError, match="privacy budget is spent"):
        trainer.step((x, y))
    assert trainer.steps_done == 4


@pytest.mark.parametrize(("changes", "says"), [
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer"),
    ({"lr": 0.0}, "lr must be a positive"),
    ({"max_grad_norm": -1.0}, "max_grad_norm must be a positive"),
    ({"max_grad_norm": math.inf}, "max_grad_norm must be a positive"),
    ({"optimiser": "rmsprop"}, "unknown optimiser 'rmsprop'"),
    ({"epsilon": 0.0}, "epsilon must be a positive"),
    ({"delta": 1.0}, "delta must lie strictly between 0 and 1"),
])
def test_a_bad_configuration_is_refused(changes, says):
    with pytest.raises(PrivacyError, match=says):
        config(**changes)


def test_a_lot_larger_than_the_cohort_or_a_ragged_lot_is_refused():
    with pytest.raises(PrivacyError, match="expected lot size 30 exceeds the cohort's 20 records"):
        PrivateTrainer(TinyLoss(), 20, config(batch_size=30))
    trainer = PrivateTrainer(TinyLoss(), 20, config())
    with pytest.raises(PrivacyError, match="different numbers of records"):
        trainer.step((torch.zeros(3, 3), torch.zeros(2, dtype=torch.int64)))
    assert trainer.steps_done == 0


def test_a_loss_that_is_not_a_scalar_is_refused():
    class PerSample(TinyLoss):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return nn.functional.cross_entropy(self.layer(x), y, reduction="none").repeat(2)

    trainer = PrivateTrainer(PerSample(), 20, config())
    with pytest.raises(PrivacyError, match="the loss must be a scalar"):
        trainer.step(lot())
    assert trainer.steps_done == 0


def test_adam_trains_too():
    module, (x, y) = TinyLoss(), lot()
    trainer = PrivateTrainer(module, 20, config(optimiser="adam", lr=0.01))
    before = trainer.state_dict()["layer.weight"]
    trainer.step((x, y))
    change = (trainer.state_dict()["layer.weight"] - before).abs()
    assert float(change.max()) == pytest.approx(0.01, rel=1e-3)  # Adam's first step moves every weight by lr


def test_a_lot_in_several_chunks_steps_as_in_one():
    module, (x, y) = TinyLoss(), lot(7)
    whole = PrivateTrainer(module, 20, config())
    chunked = PrivateTrainer(module, 20, config())
    chunked.physical_batch = 3  # 3 + 3 + 1
    whole.step((x, y))
    chunked.step((x, y))
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(chunked.state_dict()[name], value, atol=1e-6, rtol=1e-5)
    assert whole.physical_batch == 256  # a small model: the whole chunk


def test_a_sample_with_a_gradient_that_is_not_finite_adds_nothing():
    module, (x, y) = TinyLoss(), lot(5)
    poisoned_x = torch.cat([x, torch.full((1, 3), float("nan"))])
    poisoned_y = torch.cat([y, torch.zeros(1, dtype=torch.int64)])
    clean, poisoned = PrivateTrainer(module, 20, config()), PrivateTrainer(module, 20, config())
    clean.step((x, y))
    poisoned.step((poisoned_x, poisoned_y))
    for name, value in clean.state_dict().items():
        assert torch.isfinite(poisoned.state_dict()[name]).all()
        torch.testing.assert_close(poisoned.state_dict()[name], value, atol=1e-6, rtol=1e-5)


def test_the_noise_is_reseeded_from_the_os_csprng_before_every_step(monkeypatch):
    import edge_kernel.privacy.dpsgd as dpsgd

    seeds = iter([7, 7, 8])
    monkeypatch.setattr(dpsgd.secrets, "randbits", lambda bits: next(seeds))
    trainer = PrivateTrainer(TinyLoss(), 20, config(seed=None))
    empty = (torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64))  # the step's update is its noise alone
    states = [trainer.state_dict()["layer.weight"]]
    for _ in range(3):
        trainer.step(empty)
        states.append(trainer.state_dict()["layer.weight"])
    moves = [after - before for before, after in zip(states, states[1:], strict=False)]
    torch.testing.assert_close(moves[0], moves[1])  # the same seed: the same noise
    assert not torch.allclose(moves[1], moves[2])  # a new seed: new noise
