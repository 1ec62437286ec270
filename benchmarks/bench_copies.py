"""Record-copy scan (edge_kernel/release/copies.py), as a ratio to the job's own training
time measured in the same run:

1. the demo job: the quickstart's TinyCNN trained 6 epochs on 48 demo-like 1x32x32
   records (as `make demo` runs it), then its weights and metrics scanned against the 48;
2. a 10k-record dataset: 10 000 synthetic 64x64 records against an MLP of about 25M
   float32 parameters (100 MB); its training time is one epoch, taken as the median time
   of a few training steps times the steps in an epoch (an epoch itself takes minutes).

Each is also scanned with a copy planted in it, to show the figures the check reports.

Run: python benchmarks/bench_copies.py [--runs N] [--records N] [--parameters N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from edge_kernel.release.copies import released_numbers, scan_copies  # noqa: E402

BATCH = 64


def median_s(step: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def timed_scan(released: dict[str, np.ndarray], records: list[dict[str, np.ndarray]],
               runs: int) -> tuple[float, dict[str, float]]:
    figures: dict[str, float] = {}
    seconds = median_s(lambda: figures.update(scan_copies(released, records).figures()), runs)
    return seconds, figures


def records_like_the_demo(count: int, side: int, seed: int) -> np.ndarray:
    """12-bit noise with a bright blob, scaled by bits stored: (count, 1, side, side)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    out = np.empty((count, 1, side, side), np.float32)
    for index in range(count):
        cx, cy = rng.uniform(side / 8, side * 7 / 8, 2)
        blob = 2000.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (side / 10) ** 2))
        stored = np.clip(blob + rng.normal(400.0, 120.0, (side, side)), 0, 4095).astype(np.uint16)
        out[index, 0] = stored / np.float32(4095)
    return out


def as_records(images: np.ndarray, labels: np.ndarray) -> list[dict[str, np.ndarray]]:
    return [{"image": image, "finding": np.array(label)} for image, label in zip(images, labels, strict=True)]


class TinyCNN(nn.Module):  # the quickstart notebook's model
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((2, 2)))
        self.head = nn.Linear(16 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def train_steps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int | None,
                batch: int) -> list[float]:
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for index, start in enumerate(range(0, len(images), batch)):
        if steps is not None and index >= steps:
            break
        loss = nn.functional.cross_entropy(model(images[start:start + batch]), labels[start:start + batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


def weights_of(model: nn.Module) -> dict[str, np.ndarray]:
    return {name: tensor.detach().numpy().copy() for name, tensor in model.state_dict().items()}


def report(title: str, training_s: float, scan_s: float, figures: dict[str, float]) -> None:
    print(f"  {title:44s} training {training_s:8.2f} s   scan {scan_s:7.2f} s   ratio {scan_s / training_s:6.3f}")
    print(f"  {'':44s} figures {figures}")


def demo_job(runs: int) -> None:
    images = records_like_the_demo(48, 32, seed=7)
    labels = np.random.default_rng(8).integers(0, 2, 48)
    records = as_records(images, labels)
    x, y = torch.tensor(images), torch.tensor(labels)
    losses: list[float] = []

    def train() -> None:
        torch.manual_seed(0)
        model = TinyCNN()
        losses.clear()
        for _ in range(6):
            losses.extend(train_steps(model, x, y, None, 16))
        trained.update(weights_of(model))

    trained: dict[str, np.ndarray] = {}
    training = median_s(train, runs)
    released = released_numbers(trained, {"loss": losses})
    print(f"demo job: TinyCNN ({sum(w.size for w in trained.values())} parameters), 6 epochs, "
          f"48 records of 1x32x32, median of {runs}")
    report("honest model", training, *timed_scan(released, records, runs))
    planted = dict(released, **{"weights/head.weight": images.reshape(48, -1).copy()})
    report("the same with the 48 records in a weight", training, *timed_scan(planted, records, runs))


def large_job(records_count: int, parameters: int, runs: int) -> None:
    side, hidden = 64, max(1, parameters // (64 * 64 + 2))
    images = records_like_the_demo(records_count, side, seed=11)
    labels = np.random.default_rng(12).integers(0, 2, records_count)
    records = as_records(images, labels)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(side * side, hidden), nn.ReLU(), nn.Linear(hidden, 2))
    x, y = torch.tensor(images), torch.tensor(labels)
    steps = 5
    train_steps(model, x, y, 1, BATCH)  # warm
    step_s = median_s(lambda: train_steps(model, x, y, 1, BATCH), steps)
    epoch_s = step_s * -(-records_count // BATCH)
    weights = weights_of(model)
    released = released_numbers(weights, {"loss": [0.7, 0.6, 0.5]})
    size_mb = sum(w.nbytes for w in weights.values()) / 1e6
    parameters = sum(w.size for w in weights.values())
    print(f"{records_count} records of 1x{side}x{side} against an MLP of {parameters} parameters ({size_mb:.0f} MB); "
          f"training = one epoch ({steps} steps of {BATCH} timed), scan median of {runs}")
    report("honest model", epoch_s, *timed_scan(released, records, runs))
    first = weights["1.weight"].copy()
    first[:100] = images[:100].reshape(100, -1) * 0.01
    planted = dict(released, **{"weights/1.weight": first})
    report("the same with 100 records in its first layer", epoch_s, *timed_scan(planted, records, 1))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--parameters", type=int, default=25_000_000)
    args = parser.parse_args()
    demo_job(args.runs)
    large_job(args.records, args.parameters, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
