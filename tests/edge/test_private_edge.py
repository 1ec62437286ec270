"""A dataset that requires differential privacy, over HTTP against a real edge: a standard
cell is refused with the reason, a DP cell trains the quickstart model in the edge's
trainer and comes back with a receipt whose privacy section `rapha verify` shows and
checks against the weights, and a DP job without a privacy budget in the policy never runs."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from jupyter_rapha.client import EdgeClient, make_jobspec
from jupyter_rapha.protocol.private import state_digest
from tests.edge.test_private_job import DP_CELL
from tests.harness import init_edge, start_edge
from tests.test_end_to_end import TRAIN_CELL

pytestmark = pytest.mark.slow


@pytest.fixture
def special_edge(tmp_path):
    """The demo edge with its dataset marked special-category (the policy's dp_required)."""
    root = tmp_path / "edge"
    key = init_edge(root)
    registry = json.loads((root / "datasets.json").read_text())
    for dataset in registry["datasets"]:
        dataset["sensitivity"] = "special-category"
    (root / "datasets.json").write_text(json.dumps(registry))
    edge = start_edge(root)
    try:
        yield edge, key
    finally:
        edge.stop()


def submit(edge, key, code, budget=64):
    client = EdgeClient(edge.url, key)
    spec = make_jobspec(code, "synthetic-cxr", ["image", "finding"], budget, 300, {"epochs": 1}, key.key_id)
    job_id = client.submit(spec)
    return client, job_id, client.wait(job_id, timeout=400)


def test_special_category_data_trains_only_privately(special_edge, tmp_path):
    edge, key = special_edge
    _, _, status = submit(edge, key, TRAIN_CELL)
    assert status["state"] == "denied", status
    assert any("may only be trained with differential privacy" in r for r in status["reasons"]), status["reasons"]

    client, job_id, status = submit(edge, key, DP_CELL)
    assert status["state"] == "completed", (status, edge.log()[-3000:])
    receipt, weights, metrics = client.receipt(job_id), client.weights(job_id), client.metrics(job_id)
    predicate = json.loads(base64.b64decode(receipt["envelope"]["payload"]))["predicate"]
    privacy = predicate["privacy"]
    assert predicate["receipt_version"] == "1.4" and predicate["job"]["mode"] == "dp"
    assert privacy["epsilon_target"] == 8.0 and privacy["delta"] == 0.001  # policies/data.json
    assert privacy["epsilon_spent"] <= privacy["epsilon_target"]
    assert privacy["parameters_sha256"] == state_digest(weights)  # the trainer's own parameters left
    assert list(metrics) == ["epsilon"] and metrics["epsilon"][-1] == pytest.approx(privacy["epsilon_spent"])
    assert predicate["disclosure"]["decision"] == "release"  # the held-output checks ran on them
    assert predicate["dataset"]["records_used"] > 0

    out = tmp_path / "out"
    out.mkdir()
    (out / "receipt.json").write_text(json.dumps(receipt))
    (out / "weights.safetensors").write_bytes(weights)
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / "edge.pub").write_text(client.edge_info()["public_key"])
    shown = verify(out, "--rpc", edge.url + "/chain")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "DP-SGD: epsilon" in shown.stdout and "accountant opacus" in shown.stdout

    # Other weights than the trainer's fail the privacy check, by name.
    (out / "weights.safetensors").write_bytes(client.weights(job_id)[:-4] + b"\0\0\0\0")
    tampered = verify(out, "--offline")
    assert tampered.returncode != 0
    assert any(line.startswith("FAIL") and "privacy" in line for line in tampered.stdout.splitlines()), tampered.stdout


def test_a_dp_job_without_a_privacy_budget_never_runs(special_edge):
    edge, key = special_edge
    data = json.loads((edge.config / "policies" / "data.json").read_text())
    del data["hospital"]["datasets"]["synthetic-cxr"]["privacy"]
    (edge.config / "policies" / "data.json").write_text(json.dumps(data))  # taken up at the next job
    _, _, status = submit(edge, key, DP_CELL)
    assert status["state"] == "denied", status
    assert any("no usable privacy budget" in r for r in status["reasons"]), status["reasons"]
    assert status["progress"].get("records_used", 0) == 0


def verify(out, *args):
    return subprocess.run([sys.executable, "-m", "jupyter_rapha.cli", "verify", str(out / "receipt.json"), *args],
                          capture_output=True, text=True, timeout=120)
