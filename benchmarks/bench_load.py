"""Read-only routes under load, with a job training and without, in one run.

A real demo edge (`rapha-edge serve`, its own process) on loopback; 200 concurrent
keep-alive clients send freshly signed GETs of the catalog and of a job's status for a
few seconds per phase. Phases alternate: idle (no job), then job running (a torch model
training against the broker, started and seen running before the phase, cancelled
after it). Printed: p50 / p99 per route and over both, requests per second, and the
ratio job-running / idle. Goal: p50 with a job running within 2x of idle.

Run: python benchmarks/bench_load.py [--rounds N] [--seconds S] [--clients C]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jupyter_rapha.client import EdgeClient, make_jobspec  # noqa: E402
from tests.harness import init_edge, start_edge  # noqa: E402
from tests.loadgen import LoadResult, process_cpu_seconds, run_load, start_training  # noqa: E402

GOAL_RATIO = 2.0


def stop_training(client: EdgeClient, job_id: str) -> str:
    """Cancel the job; return the state it was in when the phase ended."""
    state = client.status(job_id)["state"]
    client.cancel(job_id)
    client.wait(job_id, poll=0.2, timeout=60)
    return state


def quick_job(client: EdgeClient, key) -> str:
    code = "import torch\nrapha.save({'w': torch.zeros(1)})\n"
    job_id = client.submit(make_jobspec(code, "synthetic-cxr", ["image"], 4, 120, {"epochs": 1}, key.key_id))
    status = client.wait(job_id, poll=0.2, timeout=120)
    if status["state"] != "completed":
        raise SystemExit(f"the status job did not complete: {status['reasons']}")
    return job_id


def phase(edge, key, routes: dict[str, str], args: argparse.Namespace, label: str) -> LoadResult:
    """One load phase; also records the edge process's CPU time per request (all its
    threads, the broker's included), a figure that other work on the machine skews less."""
    before = process_cpu_seconds(edge.process.pid)
    result = run_load(edge.url, key, routes, clients=args.clients, seconds=args.seconds)
    result.edge_cpu_ms = (process_cpu_seconds(edge.process.pid) - before) * 1000 / max(result.requests, 1)
    if result.non_2xx() or result.failures:
        raise SystemExit(f"{label}: failed requests {result.non_2xx()} {dict(result.failures)}")
    return result


def line(label: str, results: list[LoadResult]) -> tuple[float, float, float]:
    p50 = statistics.median(r.p50() for r in results)
    p99 = statistics.median(r.percentile(99) for r in results)
    rate = statistics.median(r.per_second for r in results)
    cpu = statistics.median(r.edge_cpu_ms for r in results)
    routes = ", ".join(f"{name} p50 {statistics.median(r.p50(name) for r in results):.1f} ms "
                       f"p99 {statistics.median(r.percentile(99, name) for r in results):.1f} ms"
                       for name in results[0].latencies_ms)
    print(f"{label}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, {rate:.0f} req/s, edge CPU {cpu:.2f} ms/request ({routes})")
    return p50, p99, rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--clients", type=int, default=200)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        key = init_edge(Path(folder) / "edge", records=64)
        edge = start_edge(Path(folder) / "edge")
        try:
            client = EdgeClient(edge.url, key)
            routes = {"catalog": "/v1/catalog", "status": f"/v1/jobs/{quick_job(client, key)}"}
            run_load(edge.url, key, routes, clients=args.clients, seconds=1.0)  # warm
            idle, busy = [], []
            for round_no in range(args.rounds):
                idle.append(phase(edge, key, routes, args, f"idle round {round_no}"))
                job_id = start_training(client, key, args.seconds + 60)
                busy.append(phase(edge, key, routes, args, f"job round {round_no}"))
                if stop_training(client, job_id) != "running":
                    raise SystemExit("the training job was not running through the whole phase")
        finally:
            edge.stop()
    print(f"{args.clients} clients, {args.rounds} rounds of {args.seconds:.0f} s per phase, "
          f"{sum(r.requests for r in idle + busy)} requests, none failed; "
          f"machine load average {load_before:.1f} at the start (other work skews absolute figures)")
    idle_p50, idle_p99, idle_rate = line("idle       ", idle)
    busy_p50, busy_p99, busy_rate = line("job running", busy)
    ratio = busy_p50 / idle_p50
    print(f"job running / idle: p50 ratio {ratio:.2f} (goal <= {GOAL_RATIO:.1f}) "
          f"{'OK' if ratio <= GOAL_RATIO else 'MISSED'}; p99 ratio {busy_p99 / idle_p99:.2f}, "
          f"req/s ratio {busy_rate / idle_rate:.2f}")


if __name__ == "__main__":
    main()
