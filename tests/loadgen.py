"""A bounded load generator for the edge's read-only routes, loopback only.

``clients`` connections (HTTP/1.1 keep-alive, one asyncio task each) send signed GETs of
the catalog and of one job's status, back to back, until ``seconds`` have passed; then
every task stops and its connection closes. Each request is signed afresh (its own nonce
and timestamp), as a real client's is, so the edge does its full S8 work per request.

Used by ``benchmarks/bench_load.py`` (timings) and ``tests/edge/test_load.py`` (that no
read-only request fails while a job runs): the count of clients and the time are both
bounded here, and the target must be a loopback address. ``TRAIN_CELL`` is the job both
run meanwhile: a torch model training against the broker for ``params["seconds"]``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from jupyter_rapha.protocol.contract import TERMINAL_STATES
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.request import sign_request

# Trains until its time is up, a broker round trip per step while the policy's epoch
# limit allows; once the loader is empty (a fast machine gets through 100 epochs of the
# demo set in seconds) it goes on stepping on the last batch, so the job runs for its
# full time on any machine and a test's load always overlaps it.
TRAIN_CELL = """
import time
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
loader = rapha.loader(batch_size=4, shuffle=True, seed=1)
end = time.time() + rapha.params["seconds"]
steps = 0
last = None
while time.time() < end:
    before = steps
    for batch in loader:
        last = batch
        loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["finding"])
        optimiser.zero_grad(); loss.backward(); optimiser.step()
        steps += 1
        if time.time() >= end:
            break
    if steps == before:
        break
while last is not None and time.time() < end:
    loss = torch.nn.functional.cross_entropy(model(last["image"]), last["finding"])
    optimiser.zero_grad(); loss.backward(); optimiser.step()
    time.sleep(0.01)
rapha.log(loss=float(loss), steps=steps)
rapha.save(model)
"""
FINAL_STATES = TERMINAL_STATES

MAX_CLIENTS = 500
MAX_SECONDS = 120.0
CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 30.0


@dataclass
class LoadResult:
    seconds: float
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)  # by route, 2xx answers only
    statuses: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)  # dropped connections, timeouts, bad answers
    edge_cpu_ms: float = float("nan")  # the edge process's CPU time per request, where measured

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def all_latencies(self) -> list[float]:
        return [ms for values in self.latencies_ms.values() for ms in values]

    def percentile(self, q: float, route: str | None = None) -> float:
        values = sorted(self.latencies_ms.get(route, []) if route else self.all_latencies())
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(q / 100 * len(values)))]

    def p50(self, route: str | None = None) -> float:
        values = self.latencies_ms.get(route, []) if route else self.all_latencies()
        return statistics.median(values) if values else float("nan")

    def p99(self, route: str | None = None) -> float:
        return self.percentile(99, route)

    def non_2xx(self) -> dict[int, int]:
        return {status: n for status, n in self.statuses.items() if not 200 <= status < 300}


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process, all its threads (Linux /proc)."""
    import os

    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_training(client: Any, key: PrivateKey, seconds: float, timeout: float = 120) -> str:
    """Submit ``TRAIN_CELL`` for ``seconds``; return its id once it runs and the broker has served a batch."""
    from jupyter_rapha.client import make_jobspec

    spec = make_jobspec(TRAIN_CELL, "synthetic-cxr", ["image", "finding"], 64, int(seconds) + 120,
                        {"epochs": 100, "seconds": int(seconds)}, key.key_id)
    job_id = client.submit(spec)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.status(job_id)
        if status["state"] == "running" and status["progress"].get("batches", 0) > 0:
            return job_id
        if status["state"] in FINAL_STATES:
            raise AssertionError(f"the training job ended before it was seen running: {status['reasons']}")
        time.sleep(0.2)
    raise AssertionError(f"the training job did not start within {timeout} s")


def loopback_target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "http" or not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the load generator only targets plain-HTTP loopback edges, not {url}")
    return host, parts.port or 80


def run_load(url: str, key: PrivateKey, routes: dict[str, str], *, clients: int = 200,
             seconds: float = 3.0) -> LoadResult:
    """Drive ``routes`` (name -> path) round-robin from ``clients`` connections for ``seconds``."""
    if not 1 <= clients <= MAX_CLIENTS or not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"clients must be 1-{MAX_CLIENTS} and seconds at most {MAX_SECONDS}")
    return asyncio.run(_run(loopback_target(url), key, routes, clients, seconds))


async def _run(target: tuple[str, int], key: PrivateKey, routes: dict[str, str], clients: int,
               seconds: float) -> LoadResult:
    result = LoadResult(seconds=seconds, latencies_ms={name: [] for name in routes})
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    names = list(routes)
    tasks = [asyncio.create_task(_client(target, key, routes, names[i % len(names):] + names[:i % len(names)],
                                         deadline, result)) for i in range(clients)]
    await asyncio.gather(*tasks)
    result.seconds = time.monotonic() - started
    return result


async def _client(target: tuple[str, int], key: PrivateKey, routes: dict[str, str], order: list[str],
                  deadline: float, result: LoadResult) -> None:
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    turn = 0
    try:
        while time.monotonic() < deadline:
            name = order[turn % len(order)]
            turn += 1
            if connection is None:
                try:
                    connection = await asyncio.wait_for(asyncio.open_connection(*target), CONNECT_TIMEOUT)
                except (TimeoutError, OSError):
                    result.failures["connect"] += 1
                    await asyncio.sleep(0.05)
                    continue
            start = time.perf_counter()
            try:
                status = await asyncio.wait_for(_get(connection, key, routes[name]), REQUEST_TIMEOUT)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                result.failures[type(exc).__name__] += 1
                connection[1].close()
                connection = None
                continue
            result.statuses[status] += 1
            if 200 <= status < 300:
                result.latencies_ms[name].append((time.perf_counter() - start) * 1000)
    finally:
        if connection is not None:
            connection[1].close()


async def _get(connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], key: PrivateKey, path: str) -> int:
    reader, writer = connection
    auth = sign_request(key, "GET", path, b"", int(time.time()))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: edge\r\nAuthorization: {auth}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length is None:
        raise ValueError("answer without Content-Length")
    await reader.readexactly(length)
    return status
