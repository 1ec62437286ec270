"""The DP-SGD trainer's throughput against Opacus's: samples per second of
``edge_kernel.privacy.PrivateTrainer`` (per-sample gradients by vmap, clipping, noise, the
optimiser, Poisson lots) and of Opacus's ``PrivacyEngine.make_private`` (GradSampleModule
hooks, DPOptimizer, Poisson DataLoader) on the same model (the quickstart's TinyCNN with
cross-entropy), the same synthetic records, lot size, noise and clipping, both in this
plain process. Only the training steps are timed; the trainer's accountant search (the
noise for the budget, once per job) is reported apart. Medians over the runs; the ratio
trainer / Opacus, goal >= 0.9.

Run: python benchmarks/bench_dp.py [--runs N] [--records N] [--batch-size N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_kernel.privacy.dpsgd import DPConfig, PrivateTrainer  # noqa: E402
from tests.privacy.models import LossModule, blobs, quickstart_model_class  # noqa: E402

GOAL = 0.9
EPSILON, DELTA, MAX_GRAD_NORM, LR = 3.0, 1e-5, 1.0, 0.02


def trainer_run(images: torch.Tensor, labels: torch.Tensor, config: DPConfig) -> tuple[float, float, int]:
    torch.manual_seed(0)
    started = time.perf_counter()
    trainer = PrivateTrainer(LossModule(quickstart_model_class()()), len(images), config)
    planned = time.perf_counter()
    seen = 0
    while trainer.budget_left():
        lot = trainer.poisson_indices()
        trainer.step((images[lot], labels[lot]))
        seen += len(lot)
    return planned - started, time.perf_counter() - planned, seen


def opacus_run(images: torch.Tensor, labels: torch.Tensor, config: DPConfig, noise: float) -> tuple[float, int]:
    torch.manual_seed(0)
    model = quickstart_model_class()()
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    loader = DataLoader(TensorDataset(images, labels), batch_size=config.batch_size)
    model, optimiser, loader = PrivacyEngine().make_private(module=model, optimizer=optimiser, data_loader=loader,
                                                            noise_multiplier=noise, max_grad_norm=config.max_grad_norm)
    started = time.perf_counter()
    seen = 0
    for _ in range(config.epochs):
        for batch_images, batch_labels in loader:
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(batch_images), batch_labels).backward()
            optimiser.step()
            seen += len(batch_images)
    return time.perf_counter() - started, seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--records", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(2)  # as the trainer's process runs
    warnings.filterwarnings("ignore")  # Opacus's notices about secure_mode and full backward hooks
    images, labels = blobs(args.records, seed=1)
    config = DPConfig(epochs=args.epochs, batch_size=args.batch_size, lr=LR, max_grad_norm=MAX_GRAD_NORM,
                      epsilon=EPSILON, delta=DELTA, optimiser="adam", seed=None)
    ours, theirs, planning, noise = [], [], [], 0.0
    for _ in range(args.runs):  # interleaved, so that a busy moment costs both sides alike
        plan, seconds, seen = trainer_run(images, labels, config)
        planning.append(plan)
        ours.append(seen / seconds)
        noise = PrivateTrainer(LossModule(quickstart_model_class()()), len(images), config).noise_multiplier
        seconds, seen = opacus_run(images, labels, config, noise)
        theirs.append(seen / seconds)
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(f"TinyCNN, {args.records} records, lots of {args.batch_size} expected, {args.epochs} epoch(s), noise "
          f"{noise:.3f}, {args.runs} runs, medians")
    print(f"  trainer      {statistics.median(ours):9.1f} samples/s   (accountant search {planning[0]:.2f} s first, "
          f"{statistics.median(planning[1:] or planning):.3f} s cached)")
    print(f"  opacus       {statistics.median(theirs):9.1f} samples/s")
    print(f"  ratio trainer / opacus {ratio:.2f} (goal >= {GOAL}) {'OK' if ratio >= GOAL else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
