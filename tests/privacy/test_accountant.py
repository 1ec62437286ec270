"""The accountant: the noise it finds for a budget keeps the budget, is the library's, and
is the smallest (within the search's tolerance); epsilon spent is Opacus's RDP figure;
every malformed budget is refused with a message that says what to fix."""

from __future__ import annotations

import math
import re

import pytest
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from edge_kernel.privacy.accountant import (ACCOUNTANT_NAME, EPSILON_TOLERANCE, ORDERS, accountant_version,
                                            epsilon_spent, noise_multiplier_for)
from edge_kernel.privacy.errors import PrivacyError
from jupyter_rapha.protocol.errors import BadInput

BUDGETS = [(3.0, 1e-5, 16 / 48, 18), (1.0, 1e-6, 0.01, 1000), (8.0, 1e-5, 1.0, 5), (0.5, 1e-3, 0.1, 50)]


@pytest.mark.parametrize(("epsilon", "delta", "sample_rate", "steps"), BUDGETS)
def test_the_noise_for_a_budget_keeps_it_and_is_the_librarys(epsilon, delta, sample_rate, steps):
    noise = noise_multiplier_for(epsilon, delta, sample_rate, steps)
    spent = epsilon_spent(noise, sample_rate, steps, delta)
    assert spent <= epsilon
    assert spent >= epsilon - EPSILON_TOLERANCE  # not more noise than the budget needs
    assert noise == get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                         steps=steps, accountant="rdp", epsilon_tolerance=EPSILON_TOLERANCE,
                                         alphas=list(ORDERS))
    assert epsilon_spent(noise * 0.97, sample_rate, steps, delta) > epsilon - EPSILON_TOLERANCE


def test_epsilon_spent_is_opacus_rdp_and_grows_with_the_steps():
    accountant = RDPAccountant()
    for _ in range(30):
        accountant.step(noise_multiplier=1.1, sample_rate=0.05)
    assert epsilon_spent(1.1, 0.05, 30, 1e-5) == pytest.approx(accountant.get_epsilon(delta=1e-5, alphas=list(ORDERS)))
    # the larger orders only ever tighten Opacus's default bound
    assert epsilon_spent(1.1, 0.05, 30, 1e-5) <= accountant.get_epsilon(delta=1e-5)
    figures = [epsilon_spent(1.1, 0.05, steps, 1e-5) for steps in (1, 10, 100, 1000)]
    assert figures == sorted(figures) and len(set(figures)) == 4
    assert epsilon_spent(1.1, 0.05, 0, 1e-5) == 0.0
    assert epsilon_spent(0.0, 0.05, 3, 1e-5) == math.inf


def test_the_accountant_names_itself():
    assert ACCOUNTANT_NAME == "opacus.rdp"
    assert accountant_version()[0].isdigit()


@pytest.mark.parametrize(("epsilon", "delta", "sample_rate", "steps", "says"), [
    (0.0, 1e-5, 0.1, 10, "epsilon must be a positive"),
    (-1.0, 1e-5, 0.1, 10, "epsilon must be a positive"),
    (math.nan, 1e-5, 0.1, 10, "epsilon must be a positive"),
    (math.inf, 1e-5, 0.1, 10, "epsilon must be a positive"),
    ("3", 1e-5, 0.1, 10, "epsilon must be a positive"),
    (None, 1e-5, 0.1, 10, "epsilon must be a positive"),
    (3.0, 0.0, 0.1, 10, "delta must lie strictly between 0 and 1"),
    (3.0, 1.0, 0.1, 10, "delta must lie strictly between 0 and 1"),
    (3.0, -1e-5, 0.1, 10, "delta must lie strictly between 0 and 1"),
    (3.0, None, 0.1, 10, "delta must lie strictly between 0 and 1"),
    (3.0, 1e-5, 0.0, 10, "sampling rate must lie in (0, 1]"),
    (3.0, 1e-5, 1.5, 10, "sampling rate must lie in (0, 1]"),
    (3.0, 1e-5, 0.1, 0, "number of steps must be a positive integer"),
    (3.0, 1e-5, 0.1, 2.5, "number of steps must be a positive integer"),
])
def test_a_malformed_budget_is_refused_with_what_to_fix(epsilon, delta, sample_rate, steps, says):
    with pytest.raises(PrivacyError, match=re.escape(says)) as caught:
        noise_multiplier_for(epsilon, delta, sample_rate, steps)
    assert isinstance(caught.value, BadInput)  # answered as bad input (400), not as a fault


def test_a_budget_no_noise_can_meet_is_refused():
    with pytest.raises(PrivacyError, match="no noise keeps epsilon 0.0001") as caught:
        noise_multiplier_for(1e-4, 1e-10, 1.0, 1_000_000)
    assert "raise epsilon" in caught.value.diagnostics()
