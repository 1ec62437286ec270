"""DP-SGD (Abadi et al. 2016) over a loss module, with the trainer holding the parameters.

``loss_module(*tensors)`` is the researcher's model and loss as one module (in DP mode the
program the job exported, ``ExportedProgram.module()``): one lot's fields in, the lot's
scalar loss out. Each step:

1. a lot by Poisson sampling: every record joins independently with probability
   ``sample_rate = batch_size / n_records`` (the sampling the accountant assumes; a fixed
   lot size or a shuffle would not be);
2. per-sample gradients: ``vmap`` over ``grad`` of ``functional_call``, each sample's loss
   computed by its own call on a lot of one, so no sample's gradient can depend on another
   sample whatever the program does with its batch;
3. each gradient clipped to ``max_grad_norm`` (over all parameters together), summed,
   Gaussian noise of standard deviation ``noise_multiplier * max_grad_norm`` added, divided
   by the EXPECTED lot size (dividing by the drawn size would leak it), and the optimiser's
   step. An empty lot still takes a noised step; a sample whose gradient is not finite
   adds nothing (a NaN is not bounded by clipping and would mark the parameters).

The noise: torch's generator (Mersenne Twister), reseeded before every step with 64 bits
from the operating system's CSPRNG (``secrets``), and drawn as Opacus's ``secure_mode``
draws it (one draw thrown away, then the sum of four draws halved, against the
floating-point attacks of Jin et al. 2022 and Mironov 2012). Opacus's ``secure_mode``
additionally takes the draws themselves from a CSPRNG (torchcsprng, unmaintained and not
built for this torch); we do not. The threat a CSPRNG defends against is someone
predicting the generator's future draws from its past outputs; here no draw and no seed
ever leaves the trainer's process (the researcher's code does not run in it), only noised
sums, and the reseeding bounds what even a recovered generator state would give away to
one step's noise: the next step's comes from a fresh seed that no output of this one
determines. The Poisson lots' generator is seeded from ``os.urandom`` once per trainer.
``DPConfig.seed`` fixes both generators (and stops the reseeding), for tests only.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import functional_call, grad_and_value, vmap

from .accountant import check_budget, epsilon_spent, noise_multiplier_for
from .errors import PrivacyError

OPTIMISERS = ("sgd", "adam")
# Samples whose gradients are held at once: at most this many, and at most as many copies
# of the parameters as fit in GRADIENT_MEMORY bytes.
PHYSICAL_BATCH = 256
GRADIENT_MEMORY = 2 << 30
# Opacus's guard against a zero norm in the clipping factor, kept so that the two agree.
CLIP_EPSILON = 1e-6

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class DPConfig:
    """One DP-SGD run. ``batch_size`` is the expected lot size under Poisson sampling."""

    epochs: int
    batch_size: int
    lr: float
    max_grad_norm: float
    epsilon: float
    delta: float
    optimiser: str = "sgd"
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise PrivacyError(f"{name} must be a positive integer, not {value!r}")
        for name in ("lr", "max_grad_norm"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise PrivacyError(f"{name} must be a positive finite number, not {value!r}")
        if self.optimiser not in OPTIMISERS:
            raise PrivacyError(f"unknown optimiser {self.optimiser!r}", hint=f"use one of {', '.join(OPTIMISERS)}")
        check_budget(self.epsilon, self.delta)


def draw_noise(shape: torch.Size, std: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise of standard deviation ``std``, drawn as Opacus's secure mode draws it."""
    torch.normal(0.0, std, (1, 1), generator=generator)  # thrown away, as Opacus does
    total = torch.zeros(shape)
    for _ in range(4):
        total += torch.normal(0.0, std, shape, generator=generator)
    return total / 2


def _generator(seed: int | None) -> torch.Generator:
    chosen = int.from_bytes(os.urandom(8), "little") if seed is None else seed
    return torch.Generator().manual_seed(chosen)


class PrivateTrainer:
    """DP-SGD over ``loss_module`` on a cohort of ``n_records`` records. The trainer
    copies the parameters out of the module and trains its copies; ``state_dict`` is the
    only way out."""

    def __init__(self, loss_module: torch.nn.Module, n_records: int, config: DPConfig) -> None:
        if not (isinstance(n_records, int) and n_records >= 1):
            raise PrivacyError(f"the cohort must hold at least one record, not {n_records!r}")
        if config.batch_size > n_records:
            raise PrivacyError(f"the expected lot size {config.batch_size} exceeds the cohort's {n_records} records",
                               hint="lower batch_size")
        self.config = config
        self.n_records = n_records
        self.sample_rate = config.batch_size / n_records
        self.steps_planned = config.epochs * math.ceil(n_records / config.batch_size)
        self.noise_multiplier = noise_multiplier_for(config.epsilon, config.delta, self.sample_rate,
                                                     self.steps_planned)
        self.steps_done = 0
        self._module = loss_module
        trained = {name for name, p in loss_module.named_parameters() if p.requires_grad}
        if not trained:
            raise PrivacyError("the model has no parameter to train")
        held = dict(loss_module.named_parameters()) | dict(loss_module.named_buffers())
        self._params: Tensors = {n: t.detach().clone() for n, t in held.items() if n in trained}
        self._fixed: Tensors = {n: t.detach().clone() for n, t in held.items() if n not in trained}
        self._optimiser = self._make_optimiser()
        seed = config.seed
        self._sampling = _generator(seed)
        self._noise = _generator(None if seed is None else seed + 1)
        self._per_sample: dict[int, Callable[..., Any]] = {}
        parameter_bytes = sum(p.numel() * p.element_size() for p in self._params.values())
        self.physical_batch = max(1, min(PHYSICAL_BATCH, GRADIENT_MEMORY // max(1, parameter_bytes)))

    def _make_optimiser(self) -> torch.optim.Optimizer:
        params = list(self._params.values())
        if self.config.optimiser == "adam":
            return torch.optim.Adam(params, lr=self.config.lr)
        return torch.optim.SGD(params, lr=self.config.lr)

    # --- sampling -------------------------------------------------------------------------

    def poisson_indices(self) -> list[int]:
        """One lot: each record's index independently with probability ``sample_rate``."""
        joined = torch.rand(self.n_records, generator=self._sampling) < self.sample_rate
        return [int(i) for i in torch.nonzero(joined).flatten()]

    # --- one step -------------------------------------------------------------------------

    def _per_sample_fn(self, fields: int) -> Callable[..., Any]:
        if fields not in self._per_sample:
            module = self._module

            def sample_loss(params: Tensors, fixed: Tensors, *sample: torch.Tensor) -> torch.Tensor:
                loss = functional_call(module, (params, fixed), tuple(t.unsqueeze(0) for t in sample))
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    raise PrivacyError("the loss must be a scalar tensor")
                return loss.reshape(())

            self._per_sample[fields] = vmap(grad_and_value(sample_loss), in_dims=(None, None) + (0,) * fields,
                                            randomness="different")
        return self._per_sample[fields]

    def per_sample_gradients(self, tensors: tuple[torch.Tensor, ...]) -> tuple[Tensors, torch.Tensor]:
        """Each sample's gradient (stacked on dim 0 per parameter) and loss, for a chunk of
        at most ``physical_batch`` samples, at the current parameters."""
        grads, losses = self._per_sample_fn(len(tensors))(self._params, self._fixed, *tensors)
        return dict(grads), losses.detach()

    def clipped_sum(self, tensors: tuple[torch.Tensor, ...]) -> tuple[Tensors, float]:
        """The sum over the lot of each sample's gradient clipped to ``max_grad_norm``
        (over all parameters together), and the sum of the samples' losses."""
        total = {name: torch.zeros_like(p) for name, p in self._params.items()}
        loss_sum = 0.0
        chunk = self.physical_batch
        for start in range(0, _lot_size(tensors), chunk):
            grads, losses = self.per_sample_gradients(tuple(t[start:start + chunk] for t in tensors))
            norms = torch.stack([g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads.values()]).sum(0).sqrt()
            factor = (self.config.max_grad_norm / (norms + CLIP_EPSILON)).clamp(max=1.0)
            # A sample whose gradient is not finite counts as a zero gradient: clipping bounds
            # no NaN, and one that reached the parameters would tell of its sample.
            factor = torch.where(torch.isfinite(norms), factor, torch.zeros_like(factor))
            for name, g in grads.items():
                total[name] += torch.einsum("i,i...->...", factor, torch.nan_to_num(g, nan=0.0, posinf=0.0,
                                                                                    neginf=0.0))
            loss_sum += float(losses.sum())
        return total, loss_sum

    def step(self, tensors: tuple[torch.Tensor, ...]) -> float:
        """One DP-SGD step on one lot (the fields of the records ``poisson_indices`` drew,
        in the loss module's order). Returns the lot's mean loss (NaN for an empty lot): a
        figure computed from the records without noise, not to be released as it is."""
        if not self.budget_left():
            raise PrivacyError(f"the privacy budget is spent: all {self.steps_planned} planned steps are done")
        size = _lot_size(tensors)
        total, loss_sum = self.clipped_sum(tensors) if size else (
            {name: torch.zeros_like(p) for name, p in self._params.items()}, math.nan)
        std = self.noise_multiplier * self.config.max_grad_norm
        if self.config.seed is None:  # a fresh seed from the OS's CSPRNG for every step's noise
            self._noise.manual_seed(secrets.randbits(64))
        for name, p in self._params.items():
            noised = total[name] + draw_noise(p.shape, std, self._noise).to(p.dtype)
            p.grad = noised / self.config.batch_size
        self._optimiser.step()
        self._optimiser.zero_grad(set_to_none=True)
        self.steps_done += 1
        return loss_sum / size if size else math.nan

    # --- the budget and the result -----------------------------------------------------------

    def epsilon_spent(self) -> float:
        return epsilon_spent(self.noise_multiplier, self.sample_rate, self.steps_done, self.config.delta)

    def budget_left(self) -> bool:
        return self.steps_done < self.steps_planned

    def state_dict(self) -> Tensors:
        """The trained parameters and the buffers, as detached copies."""
        return {name: t.detach().clone() for name, t in (self._params | self._fixed).items()}


def _lot_size(tensors: tuple[torch.Tensor, ...]) -> int:
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise PrivacyError("a lot is a non-empty tuple of tensors, one per field")
    sizes = {t.shape[0] if t.dim() else -1 for t in tensors}
    if len(sizes) != 1 or -1 in sizes:
        raise PrivacyError(f"the lot's fields hold different numbers of records: {sorted(sizes)}")
    return int(sizes.pop())
