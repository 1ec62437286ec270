"""Short job ids, as listings and progress lines show them, accepted wherever a job id is:
the edge resolves a unique prefix among the caller's own jobs, never anyone else's."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from edge_kernel.cli import main as edge_cli
from jupyter_rapha.cli import main as rapha
from jupyter_rapha.client import EdgeClient, make_jobspec
from jupyter_rapha.gateways import in_process
from jupyter_rapha.protocol.errors import BadInput, NotFound
from jupyter_rapha.protocol.keys import PrivateKey
from tests.harness import complete_job, init_edge, start_edge

pytestmark = pytest.mark.slow
DENIED_CELL = "import socket\n"  # refused by the scan gate at once: cheap jobs with chosen ids
TINY_CELL = "import torch\nrapha.log(loss=1.0)\nrapha.save(torch.nn.Linear(2, 2))\n"


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    root = tmp_path_factory.mktemp("short-ids") / "edge"
    alice = init_edge(root, records=32)
    bob = PrivateKey.generate()
    assert edge_cli(["researchers", "add", "bob", bob.public.to_text(), "--config", str(root)]) == 0
    running = start_edge(root)
    try:
        yield running, alice, bob
    finally:
        running.stop()


def submit_with_id(client: EdgeClient, key: PrivateKey, prefix: str) -> str:
    spec = make_jobspec(DENIED_CELL, "synthetic-cxr", ["image"], 4, 60, {"epochs": 1}, key.key_id)
    spec = dataclasses.replace(spec, job_id=prefix + uuid.uuid4().hex[len(prefix):])
    return client.submit(spec)


def test_a_unique_prefix_of_your_own_job_is_enough(edge):
    running, alice, bob = edge
    mine, theirs = EdgeClient(running.url, alice), EdgeClient(running.url, bob)
    twins = [submit_with_id(mine, alice, "abcdef01") for _ in range(2)]
    single = submit_with_id(mine, alice, "abcdef02")
    submit_with_id(theirs, bob, "abcdef02")  # bob's job must not make alice's prefix ambiguous
    mine.wait(single, timeout=60)
    assert mine.status("abcdef02")["job_id"] == single
    assert mine.events("abcdef02")["job_id"] == single
    assert mine.cancel("abcdef02")["job_id"] == single
    with pytest.raises(BadInput, match="2 of your jobs start with abcdef01; give more characters"):
        mine.status("abcdef01")
    assert mine.status(twins[0][:12])["job_id"] == twins[0]
    with pytest.raises(NotFound):  # never another researcher's job, whole or by prefix
        theirs.status("abcdef01")
    with pytest.raises(NotFound):
        theirs.status(twins[0])
    with pytest.raises(BadInput, match="at least 8"):
        mine.status("abcdef0")


def test_proxy_and_fetch_take_the_short_id(edge, tmp_path, capsys):
    running, alice, _ = edge
    client = EdgeClient(running.url, alice)
    job_id = complete_job(client, alice, TINY_CELL, budget=4)
    proxy = in_process(running.url, alice)
    assert proxy.status(job_id[:8])["job_id"] == job_id
    assert set(proxy.output(job_id[:8], "metrics")) == {"loss"}
    key_path = tmp_path / "alice.pem"
    key_path.write_bytes(alice.to_pem())
    out = tmp_path / "out"
    assert rapha(["fetch", job_id[:8], "--edge", running.url, "--key", str(key_path), "--out", str(out)]) in (0, 3)
    assert f"job {job_id} completed" in capsys.readouterr().out
    assert (out / "receipt.json").is_file()
