"""A real edge anchoring over JSON-RPC while its chain is down: results are released
"anchor pending", the edge is SIGKILLed and restarted, the chain comes back, and every
receipt gets anchored exactly once and is fetched anchored from the edge."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from edge_kernel.anchor.account import load_chain_account
from edge_kernel.anchor.devchain import EmbeddedChain
from edge_kernel.anchor.rpcserver import serve_chain
from jupyter_rapha.client import EdgeClient
from tests.harness import complete_job, init_edge, set_chain_backend, start_edge

pytestmark = pytest.mark.slow

CELL = "import torch\nrapha.log(loss=0.5)\nrapha.save({'w': torch.zeros(2)})\n"


def configure_rpc(root, url: str, chain_id: int) -> None:
    set_chain_backend(root, f'backend = "rpc"\nrpc_url = "{url}"\nchain_id = {chain_id}')


def run_job(client: EdgeClient, key, seed: int) -> str:
    return complete_job(client, key, CELL + f"# {seed}\n")


def verify(tmp_path, receipt: dict, edge_pub: str, *args: str) -> subprocess.CompletedProcess:
    """The receipt alone: this test is about its anchor, so the outputs are skipped by name."""
    path = tmp_path / f"r-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(receipt))
    return subprocess.run([sys.executable, "-m", "jupyter_rapha.cli", "verify", str(path), "--edge-key", edge_pub,
                           "--skip-weights", "--skip-metrics", *args],
                          capture_output=True, text=True, timeout=60)


def test_sigkill_with_rpc_down_then_every_receipt_anchored_once(tmp_path):
    root = tmp_path / "edge"
    key = init_edge(root, records=32)
    chain = EmbeddedChain(tmp_path / "chain", load_chain_account(root / "keys" / "chain.key"), allow_writes=True)
    server = serve_chain(chain)  # funds the edge's account, then goes down
    url, port = server.url, int(server.url.split(":")[2].split("/")[0])
    server.close()
    configure_rpc(root, url, chain.chain_id)

    edge = start_edge(root)
    client = EdgeClient(edge.url, key)
    edge_pub = client.edge_info()["public_key"]
    jobs = [run_job(client, key, seed) for seed in range(2)]
    for job_id in jobs:
        receipt = client.receipt(job_id)
        assert receipt["anchor"]["status"] == "pending"
        result = verify(tmp_path, receipt, edge_pub, "--offline")
        assert result.returncode == 3 and "ANCHOR PENDING" in result.stdout, result.stdout

    edge.process.send_signal(signal.SIGKILL)  # no shutdown path runs
    edge.process.wait(timeout=10)
    edge = start_edge(root)  # chain still down
    try:
        client = EdgeClient(edge.url, key)
        jobs.append(run_job(client, key, 2))
        assert client.receipt(jobs[-1])["anchor"]["status"] == "pending"
        assert chain.confirmed_nonce() == 0

        server = serve_chain(chain, port=port)  # the chain comes back
        try:
            receipts = wait_anchored(client, jobs)
            tx_hashes = {r["anchor"]["tx_hash"] for r in receipts}
            # Exactly as many transactions from the edge as distinct anchors, and the
            # batches together hold each receipt once.
            assert chain.confirmed_nonce() == len(tx_hashes)
            # (a batch's last leaf is the edge's audit head, not a receipt)
            sizes = {r["anchor"]["tx_hash"]: r["anchor"]["batch"]["size"] - 1 for r in receipts
                     if r["anchor"]["batch"]["audit_head"]}
            assert sum(sizes.values()) == len(jobs) == 3
            for receipt in receipts:
                result = verify(tmp_path, receipt, edge_pub, "--rpc", url)
                assert result.returncode == 0, result.stdout + result.stderr
            time.sleep(1.5)  # a few more outbox rounds: still nothing sent again
            assert chain.confirmed_nonce() == len(tx_hashes)
        finally:
            server.close()
    finally:
        edge.stop()


def wait_anchored(client: EdgeClient, jobs: list[str], timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        receipts = [client.receipt(job_id) for job_id in jobs]
        if all(r["anchor"].get("method") == "evm-batch" for r in receipts):
            return receipts
        time.sleep(0.3)
    raise AssertionError(f"not all anchored: {[r['anchor'] for r in receipts]}")
