"""The data plane, measured in one run:

1. RaphaDataLoader (job process, broker thread, shared memory) over a plain torch
   DataLoader on the same decoded data: throughput ratio, goal >= 0.95. Both sides run
   in processes of their own, in alternating rounds.
2. Bytes per second across the boundary for 512x512 float32 batches, shared memory
   against the socket alone; goal >= 2 GB/s.
3. Broker RSS at 1k / 10k / 100k records of a lightweight generated source, each in a
   fresh process: memory must stay flat (a small index entry per record, no batch kept).

Run: python benchmarks/bench_data.py [--runs N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch  # noqa: F401  (before anything that may load regopy)
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_kernel.data.broker import Broker  # noqa: E402
from edge_kernel.data.registry import FieldSpec  # noqa: E402
from edge_kernel.data.source import Index, RecordRef  # noqa: E402
from edge_kernel.wire.channel import Channel  # noqa: E402
from edge_kernel.sandbox.runner import run_source  # noqa: E402
from edge_kernel.settings import Settings  # noqa: E402
from jupyter_rapha.protocol.jobspec import Budget, JobSpec, code_digest  # noqa: E402

KEY = b"benchmark pseudonym key 32 bytes"
LOADER_GOAL, BYTES_GOAL = 0.95, 2e9


class ArraySource:
    """Decoded records held in memory: the boundary alone is measured."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels
        self.specs = {"image": FieldSpec("float32", images.shape[1:]), "label": FieldSpec("int64", (), "label")}

    def index(self) -> Index:
        refs = [RecordRef(hashlib.sha256(b"r%d" % i).digest(), hashlib.sha256(b"p%d" % i).digest(), str(i))
                for i in range(len(self.images))]
        return Index(sorted(refs, key=lambda r: r.pseudonym), {})

    def load(self, ref: RecordRef) -> dict[str, np.ndarray]:
        row = int(ref.location)
        return {"image": self.images[row], "label": self.labels[row]}


class GeneratedSource(ArraySource):
    """Records made on demand from their row number: 100k records without 100k files."""

    def __init__(self, count: int, size: int = 64) -> None:
        self.count, self.size = count, size
        self.specs = {"image": FieldSpec("float32", (1, size, size)), "label": FieldSpec("int64", (), "label")}

    def index(self) -> Index:
        refs = [RecordRef(hashlib.sha256(b"r%d" % i).digest(), hashlib.sha256(b"p%d" % (i // 2)).digest(), str(i))
                for i in range(self.count)]
        refs.sort(key=lambda r: r.pseudonym)
        return Index(refs, {})

    def load(self, ref: RecordRef) -> dict[str, np.ndarray]:
        row = int(ref.location)
        image = np.random.default_rng(row).random((1, self.size, self.size), dtype=np.float32)
        return {"image": image, "label": np.asarray(row % 2, np.int64)}


LOOP_CELL = '''
import time
if rapha.params.get("socket_only"):
    rapha._arena = None
loader = rapha.loader(batch_size=rapha.params["batch"], shuffle=True, seed=1, copy=rapha.params.get("copy", False))
for warm in loader:
    pass
for run in range(rapha.params["runs"]):
    start, seen = time.perf_counter(), 0
    for epoch in range(rapha.params["epochs"]):
        for batch in loader:
            seen += batch["image"].numel() * 4 + batch["label"].numel() * 8
    rapha.log(seconds=time.perf_counter() - start, bytes=seen)
'''


def job(source: ArraySource, workdir: Path, **params) -> dict[str, list[float]]:
    spec = JobSpec(job_id=secrets.token_hex(16), researcher_key_id="bench", created="2026-01-01T00:00:00Z",
                   nonce=secrets.token_hex(16), code=LOOP_CELL, code_sha256=code_digest(LOOP_CELL), dataset="bench",
                   fields=("image", "label"), budget=Budget(max_records=len(source.images), max_seconds=600),
                   params=params)
    outcome = run_source(spec, source, source.index(), KEY, workdir, Settings(config_dir=workdir.parent, edge_id="b"),
                         max_records=len(source.images))
    if outcome.status != "completed":
        raise SystemExit(f"benchmark job failed: {outcome.status} {outcome.error} "
                         + (workdir / "stderr.txt").read_text()[-2000:])
    return outcome.metrics


def loader_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((512, 1, 128, 128), dtype=np.float32), rng.integers(0, 2, 512).astype(np.int64)


def torch_child(runs: int) -> None:
    """The baseline, in a process of its own: a plain torch DataLoader as a user would
    write it, on the same decoded data; prints the seconds of each run."""
    from torch.utils.data import DataLoader, TensorDataset

    images, labels = loader_data()
    loader = DataLoader(TensorDataset(torch.from_numpy(images), torch.from_numpy(labels)), batch_size=32,
                        shuffle=True, generator=torch.Generator().manual_seed(1))
    times = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        for _ in range(4):
            for _image, _label in loader:
                pass
        times.append(time.perf_counter() - start)
    print(json.dumps(times[1:]))  # the first is the warm-up


def bench_loader(tmp: Path, runs: int, rounds: int = 5) -> None:
    """Rounds alternate the two sides, each in its own process (torch's thread pool never
    shares a process with the broker), so a burst of noise on this shared machine lands
    on both; the ratio is of the medians over all runs."""
    images, labels = loader_data()
    rapha, plain, ratios = [], [], []
    for round_ in range(rounds):
        ours = job(ArraySource(images, labels), tmp / f"loader{round_}", batch=32, epochs=4, runs=runs)["seconds"]
        out = subprocess.run([sys.executable, __file__, "--torch-child", str(runs)], capture_output=True, text=True,
                             check=True, cwd=ROOT)
        theirs = json.loads(out.stdout.strip().splitlines()[-1])
        rapha += ours
        plain += theirs
        ratios.append(statistics.median(theirs) / statistics.median(ours))
    ratio = statistics.median(plain) / statistics.median(rapha)
    print(f"loader  512 x 1x128x128 float32, batch 32, 4 epochs: "
          f"torch DataLoader {statistics.median(plain) * 1e3:.1f} ms, "
          f"RaphaDataLoader {statistics.median(rapha) * 1e3:.1f} ms (medians of {len(rapha)} runs each, "
          f"{rounds} alternating rounds); throughput ratio {ratio:.2f} (rounds {min(ratios):.2f} to {max(ratios):.2f}; "
          f"goal >= {LOADER_GOAL}) {'OK' if ratio >= LOADER_GOAL else 'MISSED'}")


def bench_bytes(tmp: Path, runs: int) -> None:
    rng = np.random.default_rng(1)
    images = rng.random((128, 1, 512, 512), dtype=np.float32)
    labels = rng.integers(0, 2, 128).astype(np.int64)
    source = ArraySource(images, labels)
    rates = {}
    for name, params in (("shared memory, leased", {}), ("shared memory, copied out", {"copy": True}),
                         ("socket only", {"socket_only": True})):
        metrics = job(source, tmp / name.replace(" ", "_").replace(",", ""), batch=16, epochs=2, runs=runs, **params)
        rates[name] = statistics.median(b / s for b, s in zip(metrics["bytes"], metrics["seconds"], strict=True))
    for name, rate in rates.items():
        print(f"boundary 512x512 float32, batch 16, {name}: {rate / 1e9:.2f} GB/s")
    best = rates["shared memory, leased"]
    print(f"boundary shared memory (leased, the default) over socket only: {best / rates['socket only']:.2f}x; "
          f"{best / 1e9:.2f} GB/s (goal >= {BYTES_GOAL / 1e9:.0f} GB/s) {'OK' if best >= BYTES_GOAL else 'MISSED'}")


def memory_child(count: int) -> None:
    """One broker over ``count`` generated records, one full epoch served; prints RSS."""
    def rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    source = GeneratedSource(count)
    base = rss()
    broker = Broker(source, source.index(), count, 1)
    indexed = rss()
    broker_end, job_end = socket.socketpair()
    thread = threading.Thread(target=broker.serve, args=(broker_end,))
    thread.start()
    channel = Channel(job_end, max_payload_bytes=1 << 30)
    peak = indexed

    def ask(request):
        channel.send(request)
        return channel.recv()

    loader = ask({"op": "open", "batch_size": 256, "shuffle": True, "seed": 0}).header["loader"]
    ask({"op": "epoch", "loader": loader})
    batches = 0
    while not ask({"op": "next", "loader": loader}).header.get("end"):
        batches += 1
        if batches % 50 == 0:
            peak = max(peak, rss())
    served = rss()
    job_end.close()
    thread.join()
    summary = broker.summary()
    print(json.dumps({"records": count, "base": base, "indexed": indexed, "served": max(served, peak),
                      "used": summary.records_used}))


def bench_memory() -> None:
    rows = []
    for count in (1_000, 10_000, 100_000):
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(count)], capture_output=True,
                             text=True, check=True, cwd=ROOT)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for row in rows:
        print(f"broker  {row['records']:>7} records: RSS {row['base'] / 2**20:.0f} MiB before, "
              f"{row['indexed'] / 2**20:.0f} MiB indexed, {row['served'] / 2**20:.0f} MiB after a full epoch "
              f"({row['used']} counted)")
    growth = (rows[-1]["served"] - rows[-1]["base"]) - (rows[0]["served"] - rows[0]["base"])
    per_record = growth / (rows[-1]["records"] - rows[0]["records"])
    serving = max(r["served"] - r["indexed"] for r in rows)
    print(f"broker  memory: {per_record:.0f} bytes per extra record (index and meter), serving adds at most "
          f"{serving / 2**20:.0f} MiB regardless of size")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--memory-child", type=int, default=0)
    parser.add_argument("--torch-child", type=int, default=0)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    if args.torch_child:
        torch_child(args.torch_child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        bench_loader(Path(tmp), args.runs)
        bench_bytes(Path(tmp), args.runs)
    bench_memory()


if __name__ == "__main__":
    main()
