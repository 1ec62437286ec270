"""The foundation's promises, over HTTP against a real edge process: a torch model
trains at the edge, the meter counts exactly, nothing identifying comes back, and the
receipt verifies and fails when anything about it is changed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from edge_kernel.data.synth import SYNTH_IDENTIFIER_TAGS
from jupyter_rapha.client import EdgeClient, make_jobspec
from jupyter_rapha.protocol.receipt import sha256_hex

pytestmark = pytest.mark.slow

TRAIN_CELL = """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 2))
optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
loader = rapha.loader(batch_size=8, shuffle=True, seed=1)
for epoch in range(rapha.epochs):
    seen, total = 0, 0.0
    for batch in loader:
        assert sorted(batch) == ["finding", "image"], sorted(batch)
        loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["finding"])
        optimiser.zero_grad(); loss.backward(); optimiser.step()
        seen += len(batch["finding"]); total += float(loss) * len(batch["finding"])
    rapha.log(loss=total / seen, seen=seen, batches=len(loader))
rapha.save(model)
"""


def run_job(edge, key, code=TRAIN_CELL, budget=40, epochs=4, fields=("image", "finding")):
    client = EdgeClient(edge.url, key)
    spec = make_jobspec(code, "synthetic-cxr", list(fields), budget, 300, {"epochs": epochs}, key.key_id)
    job_id = client.submit(spec)
    status = client.wait(job_id, timeout=240)
    return client, job_id, status


def test_training_metering_receipt_and_no_leak(demo_edge, tmp_path):
    edge, key = demo_edge
    client, job_id, status = run_job(edge, key)
    assert status["state"] == "completed", (status, edge.log()[-3000:])
    metrics, receipt, weights = client.metrics(job_id), client.receipt(job_id), client.weights(job_id)

    # A real model trained: the loss falls.
    assert metrics["loss"][-1] < metrics["loss"][0] * 0.9, metrics["loss"]
    predicate = json.loads(__import__("base64").b64decode(receipt["envelope"]["payload"]))["predicate"]
    # The meter: the budget (40 of 64 records) holds exactly; later epochs do not count again.
    assert metrics["seen"] == [40.0] * 4
    assert metrics["batches"] == [5.0] * 4
    assert predicate["dataset"]["records_used"] == 40
    assert predicate["settlement"]["records"] == 40
    assert predicate["outputs"]["weights"]["sha256"] == sha256_hex(weights)
    assert {g["name"]: g["outcome"] for g in predicate["gates"]}["spec"] == "pass"
    # Nothing of the job's working files stays behind (its stdout may hold record data).
    assert not (edge.config / "state" / "jobs" / job_id / "work").exists()
    assert (edge.config / "state" / "jobs" / job_id / "release" / "receipt.json").exists()

    # Nothing identifying comes back: no header value of any synthetic record.
    returned = b"".join([json.dumps(status).encode(), json.dumps(client.jobs()).encode(),
                         json.dumps(metrics).encode(), json.dumps(receipt).encode(), weights,
                         json.dumps(client.datasets()).encode(), json.dumps(client.edge_info()).encode()])
    values = identifying_values(edge.config / "data" / "synthetic-cxr")
    assert len(values) > 50
    leaked = [v for v in values if v.encode() in returned]
    assert leaked == []

    # The receipt verifies with the CLI, against the edge's chain over JSON-RPC ...
    out = tmp_path / "out"
    out.mkdir()
    (out / "receipt.json").write_text(json.dumps(receipt))
    (out / "weights.safetensors").write_bytes(weights)
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / "edge.pub").write_text(client.edge_info()["public_key"])
    rpc = edge.url + "/chain"
    ok = verify_cli(out / "receipt.json", "--rpc", rpc)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    # ... and fails, naming the check, for a tampered byte, a wrong key or another anchor.
    text = (out / "receipt.json").read_text()
    payload = receipt["envelope"]["payload"]
    flipped = payload[:40] + ("A" if payload[40] != "A" else "B") + payload[41:]
    (out / "receipt.json").write_text(text.replace(payload, flipped))
    assert_fails(verify_cli(out / "receipt.json", "--rpc", rpc), "signature")
    (out / "receipt.json").write_text(text)
    from jupyter_rapha.protocol.keys import PrivateKey
    (tmp_path / "other.pub").write_text(PrivateKey.generate().public.to_text())
    assert_fails(verify_cli(out / "receipt.json", "--rpc", rpc, "--edge-key", str(tmp_path / "other.pub")), "signature")
    _, other_job, _ = run_job(edge, key, budget=8, epochs=1)
    other_anchor = client.receipt(other_job)["anchor"]
    moved = dict(receipt, anchor=dict(receipt["anchor"], tx_hash=other_anchor["tx_hash"],
                                      block_number=other_anchor["block_number"]))
    (out / "receipt.json").write_text(json.dumps(moved))
    assert_fails(verify_cli(out / "receipt.json", "--rpc", rpc), "anchor")


def test_fields_not_granted_never_cross(demo_edge):
    edge, key = demo_edge
    cell = ("b = next(iter(rapha.loader(batch_size=4)))\nassert sorted(b) == ['image'], sorted(b)\n"
            "import torch\nrapha.save({'w': torch.zeros(1)})\n")
    _, _, status = run_job(edge, key, code=cell, budget=4, epochs=1, fields=("image",))
    assert status["state"] == "completed", status
    _, _, status = run_job(edge, key, code=cell, budget=4, epochs=1, fields=("image", "PatientName"))
    assert status["state"] == "denied" and "PatientName" in " ".join(status["reasons"])


def test_cell_error_returns_only_type_and_line(demo_edge):
    edge, key = demo_edge
    values = identifying_values(edge.config / "data" / "synthetic-cxr")
    secret = sorted(values)[0]
    cell = f"x = 1\nraise ValueError({secret!r})\n"
    _, _, status = run_job(edge, key, code=cell, budget=4, epochs=1)
    assert status["state"] == "failed"
    assert status["error"] == {"type": "ValueError", "line": 2, "message": None}
    assert secret not in json.dumps(status)


def identifying_values(folder: Path) -> set[str]:
    values: set[str] = set()
    for path in folder.glob("**/*.dcm"):
        ds = pydicom.dcmread(path)
        for keyword in SYNTH_IDENTIFIER_TAGS:
            value = str(ds.get(keyword, "") or "")
            if len(value) >= 4:
                values.add(value)
                values.update(part for part in value.replace("^", " ").split() if len(part) >= 5)
    return values


def verify_cli(receipt: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jupyter_rapha.cli", "verify", str(receipt), *args],
                          capture_output=True, text=True, timeout=120)


def assert_fails(result: subprocess.CompletedProcess, check: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    failing = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert failing and failing[0].split()[1] == check, result.stdout
