"""The README's `rapha run` line, run as written (a fresh process each time, as a new user
runs it) against a demo edge while two other processes keep both cores busy: an honest
cell is never refused because the machine is slow (the policy's time limit is CPU time)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import set_chain_backend, start_edge, init_edge, stop_process

ROOT = Path(__file__).resolve().parents[2]
RUNS = 20
# Small on purpose: the point is the trip through preflight and the gates, not training.
CELL = "import torch\nrapha.log(loss=1.0)\nrapha.save(torch.nn.Linear(2, 2))\n"
# 20 fresh processes on a machine made busy on purpose: minutes, not the default 10.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def readme_run_line() -> list[str]:
    match = re.search(r"^rapha run .*$", (ROOT / "README.md").read_text(), re.MULTILINE)
    assert match, "README.md shows no `rapha run` line"
    return shlex.split(match.group(0))


def test_readme_run_line_succeeds_while_both_cores_are_busy(tmp_path):
    key = init_edge(tmp_path / "edge", records=32)
    set_chain_backend(tmp_path / "edge", 'backend = "embedded"\nrpc_url = ""')  # same chain, shorter batches
    edge = start_edge(tmp_path / "edge")
    key_path = tmp_path / "researcher.pem"
    key_path.write_bytes(key.to_pem())
    key_path.chmod(0o600)
    (tmp_path / "cell.py").write_text(CELL)
    argv = [{"URL": edge.url}.get(word, word) for word in readme_run_line()]
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, RAPHA_KEY=str(key_path), PATH=f"{bin_dir}:{os.environ['PATH']}",
               PYTHONPATH=str(ROOT))
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in os.sched_getaffinity(0)]
    try:
        for attempt in range(RUNS):
            done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"run {attempt + 1} of {RUNS}:\n{done.stderr}"
            assert "receipt verified" in done.stdout
    finally:
        for spinner in spinners:
            stop_process(spinner)
        edge.stop()
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "edge.pub", "metrics.json", "receipt.json", "weights.safetensors"]
