"""A CUDA training step inside the sandbox against the same step outside it.

The same script (a small conv net, batch 64 of 1x128x128, SGD) runs in a bare process and
under `rapha-airgap exec` with the host's GPU 0 granted as an edge grants it
(`edge_kernel/sandbox/gpus.py`: device binds, driver folder and libraries read-only).
Each process times its steps after a warm-up and reports the median; the figure is
outside / inside (goal >= 0.97: the sandbox costs a step at most 3 %). Needs root, the
built binary and a CUDA GPU; prints a skip line otherwise.

Run: python benchmarks/bench_gpu.py [--steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_kernel.sandbox.airgap import BUILT_BINARY, NOBODY, airgap_command  # noqa: E402
from edge_kernel.sandbox.gpus import grant  # noqa: E402
from edge_kernel.sandbox.launch import GPU_ADDRESS_SPACE_BYTES, HOST_SECRETS, exposed_paths  # noqa: E402
from edge_kernel.settings import SandboxSettings  # noqa: E402
from jupyter_rapha.protocol.errors import BadInput  # noqa: E402

GOAL = 0.97
STEP = """
import json, statistics, sys, time
import torch
steps, warm = int(sys.argv[1]), 10
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
                            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(64 * 32 * 32, 2)).cuda()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(64, 1, 128, 128, device="cuda"), torch.randint(0, 2, (64,), device="cuda")
times = []
for step in range(warm + steps):
    torch.cuda.synchronize()
    started = time.perf_counter()
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    torch.cuda.synchronize()
    if step >= warm:
        times.append(time.perf_counter() - started)
print(json.dumps({"median_ms": statistics.median(times) * 1000, "device": torch.cuda.get_device_name(0)}))
"""


def skip_reason() -> str:
    if os.geteuid() != 0 or not BUILT_BINARY.is_file():
        return "needs root and the built rapha-airgap"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    return ""


def measure(cmd: list[str], cwd: Path) -> dict[str, float | str]:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=cwd, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)})
    if done.returncode != 0:
        raise SystemExit(f"bench_gpu: the step failed (exit {done.returncode}): {done.stderr.strip()[-400:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    reason = skip_reason()
    if not reason:
        try:
            granted = grant(SandboxSettings(gpus=(0,)))
        except BadInput as refused:
            reason = refused.message
    if reason:
        print(f"bench_gpu: skipped ({reason})")
        return 0
    step = [sys.executable, "-c", STEP, str(args.steps)]
    work = Path(tempfile.mkdtemp(prefix="rapha-bench-gpu-", dir="/var/tmp"))
    try:
        os.chown(work, NOBODY, NOBODY)
        hidden = [p for p in HOST_SECRETS if p.exists()]
        sandboxed = airgap_command(BUILT_BINARY, step, workdir=work, max_memory_bytes=GPU_ADDRESS_SPACE_BYTES,
                                   max_cpu_seconds=3600, max_wall_seconds=900, max_processes=4096,
                                   max_file_bytes=1 << 20,
                                   hidden_paths=hidden, exposed_paths=exposed_paths(hidden),
                                   device_options=granted.airgap_options())
        outside = measure(step, work)
        inside = measure(sandboxed, work)
    finally:
        shutil.rmtree(work)
    ratio = float(outside["median_ms"]) / float(inside["median_ms"])
    verdict = "ok" if ratio >= GOAL else "UNDER GOAL"
    print(f"gpu step ({inside['device']}, driver {granted.driver_version}): outside {outside['median_ms']:.2f} ms, "
          f"inside {inside['median_ms']:.2f} ms (median of {args.steps}); outside/inside {ratio:.3f}; "
          f"goal >= {GOAL}: {verdict}")
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
