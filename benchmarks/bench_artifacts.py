"""Shipping a 100 MB artifact: check, upload and submission to job start, over a plain
copy of the same bytes over loopback HTTP, in one run.

A real demo edge (`rapha-edge serve`, its own process) on loopback. Each round:
- copy: a signed-nothing HTTP PUT of the file to a bare sink process that writes it to
  disk (the floor for moving the bytes);
- ship: what `--artifact` costs before the job runs: the notebook's check (format, sha256),
  the streamed upload (the edge hashes and writes it), the submission (the edge parses
  the file as it parses released weights), the gates, until the job is `running`;
- first line: from the same start to the first line of the cell, whose clock it logs,
  with the artifact (its copy into the job's inputs, hashed again, included) and for the
  same job without one; the difference is what the artifact adds to the job's start.

Printed: medians over the rounds and the ratios ship / copy and added / copy. No goal is
set: the ratio is the figure to watch (the edge hashes the bytes three times and writes
them twice; the copy once each).

Run: python benchmarks/bench_artifacts.py [--rounds N] [--megabytes M]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from jupyter_rapha.client import EdgeClient, make_jobspec, upload_artifacts  # noqa: E402
from jupyter_rapha.inputs import parse_artifact_args  # noqa: E402
from tests.harness import init_edge, start_edge, stop_process  # noqa: E402

CELL = "import time\nrapha.log(started=time.time())\nrapha.save({'w': __import__('torch').zeros(1)})\n"
SINK = """
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    def do_PUT(self):
        left = int(self.headers["Content-Length"])
        with open(sys.argv[1], "wb") as out:
            while left:
                chunk = self.rfile.read(min(left, 1 << 20))
                out.write(chunk)
                left -= len(chunk)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def make_artifact(path: Path, megabytes: int) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"backbone": torch.randn(megabytes * 1024 * 1024 // 4)}, str(path))


def copy_seconds(path: Path, port: int) -> float:
    start = time.perf_counter()
    with open(path, "rb") as body:
        answer = requests.put(f"http://127.0.0.1:{port}/copy", data=body, timeout=300,
                              headers={"Content-Length": str(path.stat().st_size)})
    answer.raise_for_status()
    return time.perf_counter() - start


def ship(client: EdgeClient, key, path: Path | None) -> tuple[float, float, float]:
    """Seconds from the start to `running`, and to the cell's first line; and the start."""
    start_wall, start = time.time(), time.perf_counter()
    artifacts = ()
    if path is not None:
        [artifact] = parse_artifact_args([f"backbone={path}"])
        artifacts = upload_artifacts(client, (artifact.to_dict(),))
    spec = make_jobspec(CELL, "synthetic-cxr", ["image"], 4, 120, {"epochs": 1}, key.key_id, artifacts=artifacts)
    job_id = client.submit(spec)
    running = None
    while running is None:
        status = client.status(job_id)
        if status["state"] in ("running", "held", "completed"):
            running = time.perf_counter() - start
        elif status["state"] in ("denied", "failed", "cancelled"):
            raise SystemExit(f"the job ended {status['state']}: {status.get('reasons')}")
        time.sleep(0.02)
    status = client.wait(job_id, poll=0.2, timeout=300)
    if status["state"] != "completed":
        raise SystemExit(f"the job ended {status['state']}: {status.get('reasons')}")
    first_line = client.metrics(job_id)["started"][0] - start_wall
    return running, first_line, start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-artifacts-") as folder:
        root = Path(folder)
        artifact = root / "backbone.safetensors"
        make_artifact(artifact, args.megabytes)
        key = init_edge(root / "edge")
        edge = start_edge(root / "edge")
        sink = subprocess.Popen([sys.executable, "-c", SINK, str(root / "copied")], stdout=subprocess.PIPE, text=True)
        try:
            port = int(sink.stdout.readline()) if sink.stdout else 0
            client = EdgeClient(edge.url, key, timeout=120)
            ship(client, key, None)  # warm: the first job's interpreter start reads everything from disk
            copies, ships, added = [], [], []
            for _ in range(args.rounds):
                copies.append(copy_seconds(artifact, port))
                running, with_line, _ = ship(client, key, artifact)
                _, plain_line, _ = ship(client, key, None)
                ships.append(running)
                added.append(with_line - plain_line)
        finally:
            stop_process(sink)
            edge.stop()
    size = f"{args.megabytes} MiB"
    copy, shipped, extra = (statistics.median(v) for v in (copies, ships, added))
    print(f"artifact {size}: loopback HTTP copy {copy * 1000:.0f} ms; check + upload + submit to running "
          f"{shipped * 1000:.0f} ms (ratio {shipped / copy:.1f}x); added to the job's first line "
          f"{extra * 1000:.0f} ms (ratio {extra / copy:.1f}x) (medians of {args.rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
