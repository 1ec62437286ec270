"""An empirical privacy audit in one training run (Steinke, Nasr, Jagielski 2023, "Privacy
auditing with one (1) training run", section 3), of the trainer against plain training.

Canaries: M = 100 mislabelled records (drawn like class c, labelled 1 - c), each put in
the training set independently with probability 1/2, beside 500 correctly labelled
records. After one training run the auditor scores every canary by the model's margin for
the canary's (wrong) label, logit[label] - logit[other], guesses "member" for the K = 25
highest scores and "non-member" for the K lowest, and counts the correct guesses W of the
r = 2K it made.

The bound: if training is epsilon-DP, W is stochastically dominated by Binomial(r,
e^eps / (1 + e^eps)) (the paper's Theorem 3.1; for (eps, delta)-DP, Theorem 3.2 adds a
term of order M * delta, 1e-3 here). So the largest eps' with
P[Binomial(r, e^eps' / (1 + e^eps')) >= W] <= beta = 0.05 is a lower bound on the privacy
loss, at 95% confidence: the audit's empirical epsilon. The test asserts that it is at
most the trainer's epsilon (1.0) for the DP model, and that it is well above it for the
same model trained without DP (every guess right: 2.78, the most 50 guesses can show) and
for the same trainer with its noise taken out (the same steps and lots, clipped but not
noised: every guess right too), so the audit has the power to see a trainer that lost its
noise. The seeds are fixed, so the run is the same every time.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from edge_kernel.privacy.dpsgd import DPConfig, PrivateTrainer

pytestmark = pytest.mark.slow

FEATURES, BASE, CANARIES, GUESSES = 64, 500, 100, 25
BETA = 0.05
EPSILON = 1.0


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Linear(FEATURES, 256), nn.ReLU(), nn.Linear(256, 2))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(self.net(x), y)


def records(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training set (base records and the member canaries), all canaries, their labels,
    and which canaries are members."""
    generator = torch.Generator().manual_seed(seed)

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, 2, (count,), generator=generator)
        x = torch.randn(count, FEATURES, generator=generator)
        x[:, 0] += 3 * (2 * labels - 1)  # the class is the sign of feature 0
        return x, labels

    base_x, base_y = draw(BASE)
    canary_x, canary_class = draw(CANARIES)
    canary_y = 1 - canary_class  # mislabelled
    member = torch.rand(CANARIES, generator=generator) < 0.5
    return (torch.cat([base_x, canary_x[member]]), torch.cat([base_y, canary_y[member]]), canary_x, canary_y,
            member)


def binomial_tail(trials: int, p: float, at_least: int) -> float:
    return sum(math.comb(trials, i) * p ** i * (1 - p) ** (trials - i) for i in range(at_least, trials + 1))


def empirical_epsilon(correct: int, guesses: int, beta: float = BETA) -> float:
    """The largest eps with P[Binomial(guesses, e^eps/(1+e^eps)) >= correct] <= beta (0 if none)."""
    if binomial_tail(guesses, 0.5, correct) > beta:
        return 0.0
    low, high = 0.0, 20.0
    for _ in range(60):
        middle = (low + high) / 2
        p = math.exp(middle) / (1 + math.exp(middle))
        low, high = (middle, high) if binomial_tail(guesses, p, correct) <= beta else (low, middle)
    return low


def audit(model: nn.Module, state: dict[str, torch.Tensor], canary_x: torch.Tensor, canary_y: torch.Tensor,
          member: torch.Tensor) -> tuple[int, float]:
    with torch.no_grad():
        logits = functional_call(model, state, (canary_x,))
    margin = logits.gather(1, canary_y[:, None])[:, 0] - logits.gather(1, 1 - canary_y[:, None])[:, 0]
    order = torch.argsort(margin, descending=True)
    correct = int(member[order[:GUESSES]].sum()) + int((~member[order[-GUESSES:]]).sum())
    return correct, empirical_epsilon(correct, 2 * GUESSES)


def net_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name.removeprefix("net."): value for name, value in state.items()}


def private_run(module: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: float | None = None) -> PrivateTrainer:
    trainer = PrivateTrainer(module, len(x), DPConfig(epochs=10, batch_size=64, lr=0.01, max_grad_norm=1.0,
                                                      epsilon=EPSILON, delta=1e-5, optimiser="adam", seed=3))
    if noise is not None:
        trainer.noise_multiplier = noise  # the broken trainer the audit must be able to see
    while trainer.budget_left():
        lot = trainer.poisson_indices()
        trainer.step((x[lot], y[lot]))
    return trainer


def test_the_empirical_epsilon_bound_by_hand():
    assert empirical_epsilon(25, 50) == 0.0  # chance
    assert empirical_epsilon(50, 50) == pytest.approx(math.log(0.05 ** (1 / 50) / (1 - 0.05 ** (1 / 50))), abs=1e-6)
    assert 0 < empirical_epsilon(40, 50) < empirical_epsilon(45, 50) < empirical_epsilon(50, 50)


def test_the_canaries_leak_without_dp_and_stay_within_epsilon_with_it():
    torch.set_num_threads(1)
    x, y, canary_x, canary_y, member = records()

    plain = Classifier()
    optimiser = torch.optim.Adam(plain.parameters(), lr=0.01)
    for _ in range(400):  # full-batch training to (near) zero loss: the canaries are memorised
        optimiser.zero_grad()
        plain(x, y).backward()
        optimiser.step()
    plain_correct, plain_epsilon = audit(plain.net, net_state(plain.state_dict()), canary_x, canary_y, member)

    module = Classifier()
    trainer = private_run(module, x, y)
    private = net_state(trainer.state_dict())
    private_correct, private_epsilon = audit(module.net, private, canary_x, canary_y, member)
    noiseless = Classifier()
    noiseless_state = net_state(private_run(noiseless, x, y, 0.0).state_dict())
    noiseless_correct, noiseless_epsilon = audit(noiseless.net, noiseless_state, canary_x, canary_y, member)

    assert plain_correct == 2 * GUESSES and plain_epsilon > 2.5 * EPSILON, (plain_correct, plain_epsilon)
    assert noiseless_epsilon > 2.5 * EPSILON, (noiseless_correct, noiseless_epsilon)
    assert private_epsilon <= EPSILON, (private_correct, private_epsilon)
    assert trainer.epsilon_spent() <= EPSILON
    with torch.no_grad():  # the private model still learnt the task
        accuracy = (functional_call(module.net, private, (x[:BASE],)).argmax(1) == y[:BASE]).float().mean()
    assert float(accuracy) > 0.9
