"""The data plane, measured in one run:

1. RaphaDataLoader (job process, broker thread, shared memory) over a plain torch
   DataLoader on the same decoded data: throughput ratio, goal >= 0.95. Both sides run
   in processes of their own, in alternating rounds.
2. Bytes per second across the boundary for 512x512 float32 batches, shared memory
   against the socket alone; goal >= 2 GB/s.
3. Broker RSS at 1k / 10k / 100k records of a lightweight generated source, each in a
   fresh process: memory must stay flat (a small index entry per record, no batch kept).
4. DICOM files, decoded: RaphaDataLoader through run_job (index, decoder pool, disk
   cache) over a folder whose decoded records are larger than the broker's in-memory
   record cache, against a torch DataLoader with pydicom and num_workers = the machine's
   cores on the same files and the same decoding and scaling (``dicom_record.extract``):
   the first epoch's throughput ratio (goal >= 0.95) and the later epochs' (goal >= 1.5,
   served from the disk cache), in alternating rounds, each Rapha round on a fresh edge.
5. The time from run_job to the job's first batch on a folder of 10k records: the first
   job (every header read, every record decoded) and the second (index and records from
   the edge's cache).

Run: python benchmarks/bench_data.py [--runs N] [--only dicom] [--dicom-records N] ...
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
from edge_kernel.data import dicom_record  # noqa: E402
from edge_kernel.data.dicom_folder import DicomFolderSource  # noqa: E402
from edge_kernel.data.synth import make_synthetic_dataset, synthetic_dataset_entry  # noqa: E402
from edge_kernel.sandbox.runner import run_job, run_source  # noqa: E402
from edge_kernel.settings import DataSettings, Settings  # noqa: E402
from jupyter_rapha.protocol.jobspec import Budget, JobSpec, code_digest  # noqa: E402

KEY = b"benchmark pseudonym key 32 bytes"
LOADER_GOAL, BYTES_GOAL = 0.95, 2e9
FIRST_EPOCH_GOAL, CACHED_EPOCH_GOAL = 0.95, 1.5


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


DICOM_CELL = '''
import time
loader = rapha.loader(batch_size=rapha.params["batch"], shuffle=True, seed=1)
first = True
for epoch in range(rapha.params["epochs"]):
    start = time.perf_counter()
    for batch in loader:
        if first:
            rapha.log(first_batch_at=time.time())
            first = False
    rapha.log(epoch_seconds=time.perf_counter() - start)
'''


def dicom_job(entry, folder: Path, config_dir: Path, workdir: Path, workers: int | None, **params):
    spec = JobSpec(job_id=secrets.token_hex(16), researcher_key_id="bench", created="2026-01-01T00:00:00Z",
                   nonce=secrets.token_hex(16), code=DICOM_CELL, code_sha256=code_digest(DICOM_CELL),
                   dataset=entry.name, fields=("image", "finding"),
                   budget=Budget(max_records=entry.max_records, max_seconds=3600), params=params)
    settings = Settings(config_dir=config_dir, edge_id="b", data=DataSettings(decode_workers=workers))
    started = time.time()
    outcome = run_job(spec, entry, folder, ["image", "finding"], KEY, workdir, settings)
    if outcome.status != "completed":
        raise SystemExit(f"benchmark job failed: {outcome.status} {outcome.error} {outcome.fault}")
    return started, outcome.metrics


def torch_dicom_child(folder: str, size: int, epochs: int, batch: int) -> None:
    """The baseline: a torch DataLoader as a user would write it, pydicom in each of
    num_workers = the machine's cores, the same decoding and scaling as the edge's."""
    import os

    import pydicom
    from torch.utils.data import DataLoader, Dataset

    entry = synthetic_dataset_entry("bench-dicom", folder, size=size)
    specs = {name: entry.fields[name] for name in ("image", "finding")}
    labels = {"finding": entry.labels["finding"]}

    class Files(Dataset):
        def __init__(self, paths: list[Path]) -> None:
            self.paths = paths

        def __len__(self) -> int:
            return len(self.paths)

        def __getitem__(self, item: int):
            arrays = dicom_record.extract(pydicom.dcmread(self.paths[item]), specs, labels)
            return torch.from_numpy(arrays["image"]), torch.from_numpy(arrays["finding"])

    loader = DataLoader(Files(sorted(Path(folder).glob("*.dcm"))), batch_size=batch, shuffle=True,
                        num_workers=os.cpu_count() or 1, persistent_workers=True,
                        generator=torch.Generator().manual_seed(1))
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for _image, _label in loader:
            pass
        times.append(time.perf_counter() - start)
    print(json.dumps(times))


def bench_dicom(tmp: Path, records: int, size: int, epochs: int, rounds: int, workers: int | None) -> None:
    import os

    folder = tmp / "dicom"
    make_synthetic_dataset(folder, records, seed=3, size=size)
    entry = synthetic_dataset_entry("bench-dicom", str(folder), size=size)
    decoded_mib = records * size * size * 4 / 2**20
    files_mib = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
    ours_first, ours_later, theirs_first, theirs_later = [], [], [], []
    for round_ in range(rounds):
        _, metrics = dicom_job(entry, folder, tmp / f"edge{round_}", tmp / f"job{round_}", workers,
                               batch=32, epochs=epochs)
        ours_first.append(metrics["epoch_seconds"][0])
        ours_later += metrics["epoch_seconds"][1:]
        out = subprocess.run([sys.executable, __file__, "--torch-dicom-child", str(folder), "--dicom-size", str(size),
                              "--dicom-epochs", str(epochs)], capture_output=True, text=True, check=True, cwd=ROOT)
        theirs = json.loads(out.stdout.strip().splitlines()[-1])
        theirs_first.append(theirs[0])
        theirs_later += theirs[1:]
    used = workers if workers is not None else DataSettings().workers()
    first = statistics.median(theirs_first) / statistics.median(ours_first)
    later = statistics.median(theirs_later) / statistics.median(ours_later)
    above = "above" if decoded_mib > 256 else "NOT above"
    print(f"dicom   {records} files {size}x{size} ({files_mib:.0f} MiB of files, {decoded_mib:.0f} MiB decoded: "
          f"{above} the broker's 256 MiB in memory), batch 32, {epochs} epochs, {rounds} alternating rounds; "
          f"{used} decoders vs torch num_workers {os.cpu_count()}")
    print(f"dicom   first epoch: torch DataLoader {statistics.median(theirs_first):.2f} s "
          f"({records / statistics.median(theirs_first):.0f} records/s), RaphaDataLoader "
          f"{statistics.median(ours_first):.2f} s ({records / statistics.median(ours_first):.0f} records/s) "
          f"(medians of {rounds}); throughput ratio {first:.2f} (goal >= {FIRST_EPOCH_GOAL}) "
          f"{'OK' if first >= FIRST_EPOCH_GOAL else 'MISSED'}")
    print(f"dicom   later epochs: torch DataLoader {statistics.median(theirs_later):.2f} s, RaphaDataLoader "
          f"{statistics.median(ours_later):.2f} s from the disk cache (medians of {len(ours_later)}); "
          f"throughput ratio {later:.2f} (goal >= {CACHED_EPOCH_GOAL}) "
          f"{'OK' if later >= CACHED_EPOCH_GOAL else 'MISSED'}")


def bench_first_batch(tmp: Path, records: int, workers: int | None) -> None:
    folder = tmp / "dicom10k"
    made = time.perf_counter()
    make_synthetic_dataset(folder, records, seed=4, size=64)
    made = time.perf_counter() - made
    entry = synthetic_dataset_entry("bench-first", str(folder), size=64)
    indexing = []
    for _ in range(2):  # the index alone, on a cache of its own: every header, then none
        source = DicomFolderSource(folder, entry, ["image", "finding"], KEY, cache_dir=tmp / "index-only")
        start = time.perf_counter()
        source.index()
        indexing.append(time.perf_counter() - start)
    waits = []
    for job_number in range(2):  # the same edge: the second job finds the first's cache
        started, metrics = dicom_job(entry, folder, tmp / "edge-first", tmp / f"first{job_number}", workers,
                                     batch=32, epochs=1)
        waits.append(metrics["first_batch_at"][0] - started)
    print(f"first batch  {records} records of 64x64 (written in {made:.0f} s): run_job to the job's first batch "
          f"{waits[0]:.2f} s for the first job (headers read, records decoded), {waits[1]:.2f} s for the second "
          f"(index and records from the edge's cache): {waits[0] / waits[1]:.1f}x sooner; indexing alone "
          f"{indexing[0]:.2f} s with every header read, {indexing[1]:.2f} s from the index cache")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--memory-child", type=int, default=0)
    parser.add_argument("--torch-child", type=int, default=0)
    parser.add_argument("--torch-dicom-child", default="")
    parser.add_argument("--only", choices=("all", "dicom"), default="all")
    parser.add_argument("--dicom-records", type=int, default=1200, help="files in the decode benchmark")
    parser.add_argument("--dicom-size", type=int, default=256, help="their rows and columns")
    parser.add_argument("--dicom-epochs", type=int, default=4)
    parser.add_argument("--dicom-rounds", type=int, default=2)
    parser.add_argument("--first-batch-records", type=int, default=10_000)
    parser.add_argument("--decode-workers", type=int, default=None, help="default: the edge's default")
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    if args.torch_child:
        torch_child(args.torch_child)
        return
    if args.torch_dicom_child:
        torch_dicom_child(args.torch_dicom_child, args.dicom_size, args.dicom_epochs, 32)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.only == "all":
            bench_loader(Path(tmp), args.runs)
            bench_bytes(Path(tmp), args.runs)
        bench_dicom(Path(tmp), args.dicom_records, args.dicom_size, args.dicom_epochs, args.dicom_rounds,
                    args.decode_workers)
        bench_first_batch(Path(tmp), args.first_batch_records, args.decode_workers)
    if args.only == "all":
        bench_memory()


if __name__ == "__main__":
    main()
