"""The privacy accountant: Opacus's RDP accountant (Renyi DP of the subsampled Gaussian
mechanism, Mironov 2017 and Mironov, Talwar, Zhang 2019), over Opacus's default orders and
a few larger ones (ORDERS): with a large epsilon or few steps the best order lies past
Opacus's largest, 63, and stopping there would overstate the epsilon spent.

Two questions, both pure functions of numbers: the smallest noise multiplier that keeps
(epsilon, delta) over a number of Poisson-sampled steps, and the epsilon a number of
steps has spent. The trainer asks the first once, before training, and the second after
every step.
"""

from __future__ import annotations

import functools
import math

import opacus
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from .errors import PrivacyError

ACCOUNTANT_NAME = "opacus.rdp"
# The binary search's precision on epsilon: the noise found spends at most the target and
# at least the target minus this.
EPSILON_TOLERANCE = 0.01
ORDERS = tuple(RDPAccountant.DEFAULT_ALPHAS) + (80, 96, 128, 192, 256)


def accountant_version() -> str:
    return str(opacus.__version__)


def check_budget(epsilon: float, delta: float) -> None:
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
        raise PrivacyError(f"epsilon must be a positive finite number, not {epsilon!r}",
                           hint="set the dataset's privacy epsilon, e.g. 3.0")
    if not (isinstance(delta, (int, float)) and 0 < delta < 1):
        raise PrivacyError(f"delta must lie strictly between 0 and 1, not {delta!r}",
                           hint="use a delta below 1 / the number of records, e.g. 1e-5")


def check_sampling(sample_rate: float, steps: int) -> None:
    if not (isinstance(sample_rate, (int, float)) and 0 < sample_rate <= 1):
        raise PrivacyError(f"the sampling rate must lie in (0, 1], not {sample_rate!r}",
                           hint="the expected lot size cannot exceed the number of records")
    if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1):
        raise PrivacyError(f"the number of steps must be a positive integer, not {steps!r}")


@functools.lru_cache(maxsize=64)
def noise_multiplier_for(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier (to within EPSILON_TOLERANCE on epsilon) for which
    ``steps`` steps at ``sample_rate`` spend at most (epsilon, delta). A binary search of
    a dozen accountant calls (seconds); the answers are kept, as the function is pure."""
    check_budget(epsilon, delta)
    check_sampling(sample_rate, steps)
    try:
        noise = get_noise_multiplier(target_epsilon=float(epsilon), target_delta=float(delta),
                                     sample_rate=float(sample_rate), steps=steps, accountant="rdp",
                                     epsilon_tolerance=EPSILON_TOLERANCE, alphas=list(ORDERS))
    except ValueError as error:  # Opacus: "The privacy budget is too low."
        raise PrivacyError(f"no noise keeps epsilon {epsilon} at delta {delta} over {steps} steps "
                           f"at sampling rate {sample_rate:.4g} ({error})",
                           hint="raise epsilon or delta, or train fewer epochs or with smaller lots") from error
    return float(noise)


def epsilon_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """The epsilon at ``delta`` that ``steps`` steps of noise ``noise_multiplier`` at
    ``sample_rate`` have spent (0 for no steps, infinity for no noise)."""
    if steps == 0:
        return 0.0
    check_sampling(sample_rate, steps)
    check_budget(1.0, delta)
    if not (isinstance(noise_multiplier, (int, float)) and noise_multiplier >= 0):
        raise PrivacyError(f"the noise multiplier must be a non-negative number, not {noise_multiplier!r}")
    if noise_multiplier == 0:
        return math.inf
    accountant = RDPAccountant()
    accountant.history = [(float(noise_multiplier), float(sample_rate), steps)]
    return float(accountant.get_epsilon(delta=float(delta), alphas=list(ORDERS)))
