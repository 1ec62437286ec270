"""Real edges for tests: `rapha-edge init` into a temp dir and `rapha-edge serve` as a
subprocess on a free loopback port, stopped and reaped afterwards."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from edge_kernel.cli import main as edge_cli
from jupyter_rapha.protocol.keys import PrivateKey

_READY = re.compile(r"serving on (https?://127\.0\.0\.1:\d+)")


@dataclass
class RunningEdge:
    config: Path
    url: str
    process: subprocess.Popen
    log_path: Path

    def stop(self) -> None:
        stop_process(self.process, signal.SIGINT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def init_edge(root: Path, *, records: int = 64, researcher: PrivateKey | None = None,
              name: str = "alice") -> PrivateKey:
    assert edge_cli(["init", str(root), "--demo", "--records", str(records)]) == 0
    researcher = researcher or PrivateKey.generate()
    assert edge_cli(["researchers", "add", name, researcher.public.to_text(), "--config", str(root)]) == 0
    return researcher


def start_edge(root: Path, timeout: float = 60, *, preload: str = "") -> RunningEdge:
    """``preload``: Python run in the edge process before ``rapha-edge serve`` (a test's
    monkeypatch, such as a crash at one step; the edge's own code has no test hooks)."""
    log_path = root / "serve.log"
    offset = log_path.stat().st_size if log_path.exists() else 0  # a restart appends to the log
    handle = open(log_path, "a")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    entry = ["-m", "edge_kernel.cli"]
    if preload:
        entry = ["-c", preload + "\nimport sys\nfrom edge_kernel.cli import main\nsys.exit(main(sys.argv[1:]))"]
    process = subprocess.Popen([sys.executable, *entry, "serve", "--config", str(root),
                                "--port", "0", "--host", "127.0.0.1"], stdout=handle, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _READY.search(log_path.read_bytes()[offset:].decode(errors="replace"))
        if match:
            return RunningEdge(root, match.group(1), process, log_path)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("edge did not start:\n" + log_path.read_text(errors="replace"))


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Ask a test's subprocess to stop, kill it if it has not within ``timeout``, reap it."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def complete_job(client, key, code: str, *, fields=("image",), budget: int = 4, epochs: int = 1,
                 timeout: float = 120) -> str:
    """Submit a job and wait until it completes; return its id."""
    from jupyter_rapha.client import make_jobspec

    spec = make_jobspec(code, "synthetic-cxr", list(fields), budget, 120, {"epochs": epochs}, key.key_id)
    job_id = client.submit(spec)
    status = client.wait(job_id, timeout=timeout)
    assert status["state"] == "completed", (status["reasons"], status["gates"])
    return job_id


FAST_OUTBOX = ("batch_interval_seconds = 0.3\nrelease_wait_seconds = 10\nretry_initial_seconds = 0.2\n"
               "retry_max_seconds = 1\nrpc_timeout_seconds = 5")


def set_chain_backend(root: Path, backend_lines: str) -> None:
    """Replace the demo edge's embedded chain with ``backend_lines``, with a fast outbox."""
    text = (root / "edge.toml").read_text()
    replaced = text.replace('backend = "embedded"\nrpc_url = ""', backend_lines + "\n" + FAST_OUTBOX)
    assert replaced != text, "edge.toml has no embedded chain section to replace"
    (root / "edge.toml").write_text(replaced)
