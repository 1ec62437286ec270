"""The membership-inference check's cost, as a ratio to the job's own training time,
both measured in the same run: the demo job (the quickstart cell's TinyCNN, 6 epochs over
48 of the demo dataset's 120 DICOM records, 50 held back) and a 10k-record synthetic
dataset (the same cell, 1 epoch over 10,000 records, 1,112 held back). Per run: the
training (the cell without rapha.save), the export at rapha.save, and the check
(loading the exported program safely, the decoy probe, the loss on every used and
held-back record, the attack's figures). Medians over the runs.

Run: python benchmarks/bench_membership.py [--runs N] [--large-runs N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_kernel.data.dicom_folder import DicomFolderSource  # noqa: E402
from edge_kernel.data.holdback import Holdback, split_cohort  # noqa: E402
from edge_kernel.data.reload import reload_from  # noqa: E402
from edge_kernel.data.synth import make_synthetic_dataset, synthetic_dataset_entry  # noqa: E402
from edge_kernel.inside.runtime import Rapha  # noqa: E402
from edge_kernel.release.membership import membership_figures  # noqa: E402
from edge_kernel.wire.outputs import PROGRAM_FILE  # noqa: E402
from examples.make_quickstart import TRAIN_CELL  # noqa: E402

KEY = b"benchmark pseudonym key, 32 byte"
SCHEMA = {"image": {"dtype": "float32", "shape": [1, 32, 32], "kind": "feature"},
          "finding": {"dtype": "int64", "shape": [], "kind": "label"}}
Records = list[dict[str, np.ndarray]]


class CellRuntime:
    """The ``rapha`` object a cell sees, serving batches from memory (the broker's cost is
    bench_data's subject); ``save`` keeps the model so that the export is timed apart."""

    def __init__(self, records: Records, epochs: int) -> None:
        self.records, self.params, self.schema = records, {"epochs": epochs}, SCHEMA
        self.epochs = epochs
        self.model: Any = None

    def loader(self, batch_size: int = 32, shuffle: bool = True, seed: int = 0) -> list[dict[str, torch.Tensor]]:
        order = np.random.default_rng(seed).permutation(len(self.records)) if shuffle else range(len(self.records))
        picked = [self.records[int(i)] for i in order]
        return [{name: torch.from_numpy(np.stack([r[name] for r in picked[start:start + batch_size]]))
                 for name in SCHEMA} for start in range(0, len(picked), batch_size)]

    def log(self, **metrics: Any) -> None:
        pass

    def save(self, model: Any) -> None:
        self.model = model


def demo_records(folder: Path) -> tuple[Records, Records]:
    make_synthetic_dataset(folder, 120, seed=7)  # what `rapha-edge init --demo` writes
    source = DicomFolderSource(folder, synthetic_dataset_entry("synthetic-cxr", str(folder)), ["image", "finding"],
                               KEY)
    refs = source.index().records
    held_back, rest = split_cohort(refs, Holdback().size(len(refs)), seed=1)
    used = rest[:48]  # the quickstart's budget
    return (reload_from(source, [r.pseudonym for r in used]), reload_from(source, [r.pseudonym for r in held_back]))


def large_records(used: int = 10_000) -> tuple[Records, Records]:
    """Blob-left-or-right images, like the demo's, drawn straight into arrays."""
    total = used + 1  # the smallest cohort from which the default holdback leaves `used`
    while total - Holdback().size(total) < used:
        total += 1
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, total)
    yy, xx = np.mgrid[0:32, 0:32]
    centres = np.where(labels[:, None] == 0, 9, 23) + rng.normal(0, 2, (total, 2))
    images = np.exp(-((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2) / 18.0)
    images = (images + rng.normal(0, 0.1, images.shape)).astype(np.float32)[:, None]
    records = [{"image": images[i], "finding": np.asarray(labels[i], dtype=np.int64)} for i in range(total)]
    held_back, rest = split_cohort(records, Holdback().size(total), seed=2)
    return rest[:used], held_back


def one_run(used: Records, held_back: Records, epochs: int, out: Path) -> dict[str, float]:
    runtime = CellRuntime(used, epochs)
    started = time.perf_counter()
    exec(compile(TRAIN_CELL, "<cell>", "exec"), {"rapha": runtime})  # noqa: S102 - the project's own example
    trained = time.perf_counter()
    Rapha(None, {}, SCHEMA, out).save(runtime.model)  # type: ignore[arg-type]  # the real export
    exported = time.perf_counter()
    figures = membership_figures(out / PROGRAM_FILE, used, held_back, SCHEMA)
    checked = time.perf_counter()
    if figures["status"] != "checked":
        raise SystemExit(f"the check did not run: {figures}")
    return {"train": trained - started, "export": exported - trained, "check": checked - exported,
            "auc": figures["auc"]}


def report(name: str, runs: list[dict[str, float]], used: int, held_back: int) -> None:
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(f"{name}: {used} records used, {held_back} held back, {len(runs)} run(s), medians")
    print(f"  training      {median['train']:8.2f} s")
    print(f"  export        {median['export']:8.2f} s   {median['export'] / median['train']:6.3f} x training")
    print(f"  MIA check     {median['check']:8.2f} s   {median['check'] / median['train']:6.3f} x training"
          f"   (AUC {median['auc']:.3f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of the demo job")
    parser.add_argument("--large-runs", type=int, default=3, help="runs of the 10k-record job")
    args = parser.parse_args()
    torch.set_num_threads(2)  # as the job process runs
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        used, held_back = demo_records(root / "demo")
        runs = [one_run(used, held_back, 6, root / f"demo-{i}") for i in range(args.runs)]
        report("demo job", runs, len(used), len(held_back))
        used, held_back = large_records()
        runs = [one_run(used, held_back, 1, root / f"large-{i}") for i in range(args.large_runs)]
        report("10k-record job", runs, len(used), len(held_back))
    return 0


if __name__ == "__main__":
    sys.exit(main())
