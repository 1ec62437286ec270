"""Scan plus policy for a 300-line cell: median over 50 runs against a 30 ms goal.

Run: python benchmarks/bench_gates.py [--runs N]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import statistics
import sys
import time
from pathlib import Path

if importlib.util.find_spec("torch"):  # torch must load before regopy in one process
    import torch  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jupyter_rapha.protocol.policy import PolicyBundle, evaluate  # noqa: E402
from jupyter_rapha.protocol.scan import scan_source  # noqa: E402
from tests.edge.scan_corpus import TRAINING_CELLS  # noqa: E402

GOAL_MS = 30.0


def cell_of(lines: int) -> str:
    text, parts = "", itertools.cycle(TRAINING_CELLS.values())
    while text.count("\n") < lines:
        text += next(parts)
    return "\n".join(text.splitlines()[:lines]) + "\n"


def policy_bundle() -> PolicyBundle:
    directory = ROOT / "policies"
    modules = {p.name: p.read_text() for p in directory.glob("*.rego") if not p.name.endswith("_test.rego")}
    return PolicyBundle.from_texts(modules, (directory / "data.json").read_text())


def policy_input(scan: dict) -> dict:
    return {
        "job": {"dataset": "synthetic-cxr", "fields": ["image", "finding"],
                "budget": {"max_records": 100, "max_seconds": 600},
                "output_policy": {"max_weights_bytes": 10**6, "metric_names": ["loss"], "max_metric_points": 1000},
                "params": {"epochs": 3}},
        "scan": scan, "attestation": {"backend": "tdx", "outcome": "pass", "report_data_binding": "ok"},
        "airgap": {"sealed": True},
        "dataset": {"name": "synthetic-cxr", "fields": ["finding", "image"], "sensitivity": "synthetic",
                    "cohort_size": 40, "max_records": 1000, "price": "0.01"},
        "researcher": {"name": "alice", "key_id": "00", "roles": ["researcher"], "purposes": ["research"]},
        "edge": {"demo": False, "unsafe": []},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    runs = parser.parse_args().runs
    cell, bundle = cell_of(300), policy_bundle()
    scan_ms, policy_ms, total_ms = [], [], []
    evaluate(bundle, policy_input(scan_source(cell).to_dict()))  # warm: load the engine once
    for _ in range(runs):
        start = time.perf_counter()
        report = scan_source(cell)
        middle = time.perf_counter()
        decision = evaluate(bundle, policy_input(report.to_dict()))
        end = time.perf_counter()
        assert decision.allowed, decision.deny
        scan_ms.append((middle - start) * 1000)
        policy_ms.append((end - middle) * 1000)
        total_ms.append((end - start) * 1000)
    median = statistics.median(total_ms)
    print(f"cell: {cell.count(chr(10))} lines, runs: {runs}")
    print(f"scan median {statistics.median(scan_ms):.2f} ms, policy median {statistics.median(policy_ms):.2f} ms")
    print(f"scan+policy median {median:.2f} ms (goal {GOAL_MS:.0f} ms, ratio {median / GOAL_MS:.2f})")


if __name__ == "__main__":
    main()
