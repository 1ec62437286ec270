"""Sandbox start-up: `rapha-airgap exec -- /bin/true` over a bare `/bin/true`.

Median over 30 runs of each against a 150 ms goal for the difference. Needs root and the
built binary (make airgap).

Run: python benchmarks/bench_airgap.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BINARY = ROOT / "rust" / "airgap" / "target" / "release" / "rapha-airgap"
GOAL_MS = 150.0


def median_ms(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    if os.geteuid() != 0 or not BINARY.is_file():
        print("bench_airgap: skipped (needs root and the built rapha-airgap)")
        return 0
    sandboxed = [str(BINARY), "exec", "--hide", "/run", "--max-wall", "60", "--", "/bin/true"]
    median_ms(sandboxed, 3)  # warm the page cache
    bare = median_ms(["/bin/true"], args.runs)
    sealed = median_ms(sandboxed, args.runs)
    overhead = sealed - bare
    verdict = "ok" if overhead <= GOAL_MS else "OVER GOAL"
    print(f"airgap start-up: bare {bare:.2f} ms, sandboxed {sealed:.2f} ms (median of {args.runs}); "
          f"overhead {overhead:.2f} ms, ratio {sealed / bare:.1f}x; goal <= {GOAL_MS:.0f} ms: {verdict}")
    return 0 if overhead <= GOAL_MS else 1


if __name__ == "__main__":
    sys.exit(main())
