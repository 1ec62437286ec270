"""Held outputs on a real edge (#14): nothing of a finished job leaves before its release
is decided; an honest training cell is released automatically with its disclosure
figures in the receipt; cells that copy records out are refused with nothing reaching
the researcher; a check that crashes or hangs refuses (S4); an edge restarted while a
job is held keeps it held and runs its checks again.

The record-copy cells need the copy scan (``release/copies.py``) and the honest cell the
membership check (``release/membership.py``): they are skipped until those are in."""

from __future__ import annotations

import base64
import importlib.util
import json
import signal
import time

import pytest

from jupyter_rapha.client import EdgeClient, JobHeld, final_error, make_jobspec
from jupyter_rapha.protocol.errors import NotFound, ReleaseDenied
from jupyter_rapha.protocol.keys import load_public_key
from jupyter_rapha.protocol.receipt import verify_receipt
from tests.harness import init_edge, start_edge, stop_process

pytestmark = pytest.mark.slow

RECORDS, BUDGET = 128, 48  # 128 records: the demo policy holds 50 back for membership inference
needs_copies = pytest.mark.skipif(importlib.util.find_spec("edge_kernel.release.copies") is None,
                                  reason="needs the record-copy scan (release/copies.py)")
needs_membership = pytest.mark.skipif(importlib.util.find_spec("edge_kernel.release.membership") is None,
                                      reason="needs the membership check (release/membership.py)")
CHECK_FAILED = "release: a disclosure check could not be completed, so the outputs were not released"

HONEST = """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 2))
optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
for epoch in range(rapha.epochs):
    for batch in rapha.loader(batch_size=8, shuffle=True):
        loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["finding"])
        optimiser.zero_grad(); loss.backward(); optimiser.step()
    rapha.log(loss=float(loss))
rapha.save(model)
"""
_GATHER = """
import torch
rows = torch.cat([b["image"].reshape(len(b["image"]), -1) for b in rapha.loader(batch_size=8)])
"""
VERBATIM = _GATHER + "rapha.save({'w': rows.clone()})\n"
SCALED_PERMUTED = _GATHER + """
order = torch.randperm(rows.shape[1], generator=torch.Generator().manual_seed(3))
rapha.save({'w': (rows[:, order] * -3.5 + 0.25).contiguous()})
"""
IN_METRICS = _GATHER + """
for value in rows[0].tolist():
    rapha.log(loss=value)
rapha.save({'w': torch.zeros(2)})
"""
LOW_BITS = _GATHER + """
noise = torch.randn(rows.numel(), generator=torch.Generator().manual_seed(5)).view(torch.int32)
pixels = (rows.reshape(-1) * 255).round().to(torch.int32)
rapha.save({'w': ((noise & ~0xFF) | pixels).view(torch.float32).reshape(rows.shape)})
"""
QUICK = ("import torch\nfor b in rapha.loader(batch_size=8):\n    pass\n"
         "rapha.save({'w_secret_name': torch.full((3,), 31337.0)})\n")


def fake_checks(command: str, timeout_s: float = 60) -> str:
    """Preload for the edge: its check process replaced by ``command`` (a Python script),
    everything else (reload, limits, air-gap, the walk) as shipped."""
    return (
        "import sys\nimport edge_kernel.release.check_runner as runner\n"
        "_init = runner.CheckProcess.__init__\n"
        "def _patched(self, settings, records, **limits):\n"
        f"    _init(self, settings, records, timeout_s={timeout_s}, command=[sys.executable, '-c', {command!r}])\n"
        "runner.CheckProcess.__init__ = _patched\n")


FIGURES = {
    "capacity": {"parameters": 3, "records_used": BUDGET, "parameters_per_record": 0.0625},
    "record_copies": {"records_scanned": BUDGET, "numbers_scanned": 3, "records_matched": 0,
                      "max_correlation": 0.0123, "seconds": 0.01},
    "membership": {"status": "checked", "auc": 0.5111, "tpr_at_1pct_fpr": 0.0, "records_used": BUDGET,
                   "holdback_size": 50, "attack": "loss_threshold"},
}
ANSWER = ("import json\nfigures = json.loads(" + repr(json.dumps(FIGURES)) + ")\n"
          "for name, f in figures.items(): print(json.dumps({'check': name, 'figures': f}), flush=True)\n"
          "open('checks.json', 'w').write(json.dumps({'checks': figures, 'holdback_size': 50}))\n")
HANG = "import time\ntime.sleep(600)\n"


@pytest.fixture
def edge_root(tmp_path):
    root = tmp_path / "edge"
    key = init_edge(root, records=RECORDS)
    return root, key


def submit(edge, key, code, epochs=1):
    client = EdgeClient(edge.url, key)
    spec = make_jobspec(code, "synthetic-cxr", ["image", "finding"], BUDGET, 300, {"epochs": epochs}, key.key_id)
    return client, client.submit(spec)


def wait_for(client, job_id, done, timeout=180):
    deadline = time.monotonic() + timeout
    while not done(status := client.status(job_id)):
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    return status


def nothing_reaches_the_researcher(client, job_id, secrets=("w_secret_name", "31337")):
    for fetch in (client.weights, client.metrics, client.receipt):
        with pytest.raises(NotFound):
            fetch(job_id)
    seen = json.dumps([client.status(job_id), client.events(job_id)])
    assert not [s for s in secrets if s in seen], seen
    assert not [e for e in client.events(job_id)["events"] if e["kind"] == "metrics"]


def predicate_of(receipt):
    return json.loads(base64.b64decode(receipt["envelope"]["payload"]))["predicate"]


def test_a_held_job_shows_nothing_and_survives_a_restart_then_is_released(edge_root):
    root, key = edge_root
    edge = start_edge(root, preload=fake_checks(HANG))
    try:
        client, job_id = submit(edge, key, QUICK)
        status = wait_for(client, job_id, lambda s: s["state"] == "held")
        assert status["progress"]["checks_total"] == 3 and status["progress"]["checks_done"] == 0
        assert client.cancel(job_id)["state"] == "held"  # held outputs are decided, never withdrawn
        nothing_reaches_the_researcher(client, job_id)
    finally:
        edge.stop()  # SIGINT: the check is killed, the job stays held
    edge = start_edge(root, preload=fake_checks(ANSWER))
    try:
        client = EdgeClient(edge.url, key)
        status = client.wait(job_id, timeout=120)
        assert status["state"] == "completed", (status, edge.log()[-3000:])
        receipt = client.receipt(job_id)
        disclosure = predicate_of(receipt)["disclosure"]
        assert disclosure["checks"] == FIGURES and disclosure["decision"] == "release"
        assert disclosure["rule"] == "checks_under_thresholds" and disclosure["mode"] == "auto"
        key_text = client.edge_info()["public_key"]
        result = verify_receipt(receipt, load_public_key(key_text), weights=client.weights(job_id),
                                metrics=client.metrics(job_id))
        assert ("disclosure", "pass") in [(c.name, c.status) for c in result.checks]
        events = [e["data"] for e in client.events(job_id)["events"]]
        assert [e["state"] for e in events if "state" in e] == ["submitted", "running", "held", "completed"]
        assert any(e.get("checks_done") == 3 and e.get("copies_max_correlation") == 0.01 for e in events)
    finally:
        edge.stop()
    audit = (root / "serve.log").read_text()
    assert "Traceback" not in audit


@pytest.mark.parametrize("command, timeout_s", [("import sys\nsys.exit(3)\n", 60), (HANG, 3),
                                                ("print('not figures')\n", 60)])
def test_a_check_that_crashes_hangs_or_answers_nonsense_refuses(edge_root, command, timeout_s):
    root, key = edge_root
    edge = start_edge(root, preload=fake_checks(command, timeout_s))
    try:
        client, job_id = submit(edge, key, QUICK)
        status = client.wait(job_id, timeout=180)
        assert status["state"] == "refused" and status["reasons"] == [CHECK_FAILED], status
        assert isinstance(final_error(status), ReleaseDenied)
        nothing_reaches_the_researcher(client, job_id)
        assert not (root / "state" / "jobs" / job_id / "held").exists()
    finally:
        edge.stop()


def test_a_review_dataset_holds_the_job_for_an_output_checker(edge_root):
    root, key = edge_root
    data_path = root / "policies" / "data.json"
    data = json.loads(data_path.read_text())
    data["hospital"]["release"]["datasets"]["synthetic-cxr"]["mode"] = "two_person"
    data_path.write_text(json.dumps(data))
    edge = start_edge(root, preload=fake_checks(ANSWER))
    try:
        client, job_id = submit(edge, key, QUICK)
        status = client.wait(job_id, timeout=180)  # returns: waiting for review is not running
        assert status["state"] == "held" and status["progress"]["review_needed"] == 1
        assert status["progress"]["approvals_needed"] == 2
        assert isinstance(final_error(status), JobHeld)
        nothing_reaches_the_researcher(client, job_id)
        stop_process(edge.process, signal.SIGKILL)  # even a hard stop keeps it held
        edge = start_edge(root, preload=fake_checks(HANG))
        time.sleep(1)
        assert EdgeClient(edge.url, key).status(job_id)["progress"]["review_needed"] == 1  # no checks re-run
    finally:
        edge.stop()


@needs_copies
@needs_membership
def test_an_honest_cell_is_released_at_once_with_its_disclosure_figures(edge_root):
    root, key = edge_root
    edge = start_edge(root)
    try:
        client, job_id = submit(edge, key, HONEST, epochs=3)
        status = client.wait(job_id, timeout=300)
        assert status["state"] == "completed", (status, edge.log()[-3000:])
        disclosure = predicate_of(client.receipt(job_id))["disclosure"]
        assert disclosure["decision"] == "release" and disclosure["holdback_size"] == 50
        copies, membership = disclosure["checks"]["record_copies"], disclosure["checks"]["membership"]
        assert copies["records_matched"] == 0 and copies["records_scanned"] == BUDGET
        assert membership["status"] == "checked" and 0.0 <= membership["auc"] <= 1.0
        assert disclosure["checks"]["capacity"]["parameters"] == 32 * 32 * 2 + 2
    finally:
        edge.stop()


@needs_copies
@pytest.mark.parametrize("cell", [VERBATIM, SCALED_PERMUTED, IN_METRICS, LOW_BITS],
                         ids=["verbatim", "scaled-permuted", "in-metrics", "low-bits"])
def test_a_cell_that_copies_records_out_is_refused_and_nothing_leaves(edge_root, cell):
    root, key = edge_root
    edge = start_edge(root)
    try:
        client, job_id = submit(edge, key, cell)
        status = client.wait(job_id, timeout=300)
        assert status["state"] == "refused", (status, edge.log()[-3000:])
        assert any("copied" in reason for reason in status["reasons"]), status["reasons"]
        nothing_reaches_the_researcher(client, job_id, secrets=())
    finally:
        edge.stop()


def test_rapha_run_says_held_for_review_writes_nothing_and_exits_4(tmp_path, capsys):
    from jupyter_rapha.cli import HELD_EXIT, main
    from jupyter_rapha.keystore import create_key

    key_path, root, out = tmp_path / "me.pem", tmp_path / "edge", tmp_path / "out"
    init_edge(root, records=RECORDS, researcher=create_key(key_path))
    data_path = root / "policies" / "data.json"
    data = json.loads(data_path.read_text())
    data["hospital"]["release"]["datasets"]["synthetic-cxr"]["mode"] = "review"
    data_path.write_text(json.dumps(data))
    (tmp_path / "cell.py").write_text(QUICK)
    edge = start_edge(root, preload=fake_checks(ANSWER))
    try:
        code = main(["run", str(tmp_path / "cell.py"), "--edge", edge.url, "--dataset", "synthetic-cxr",
                     "--budget", str(BUDGET), "--key", str(key_path), "--out", str(out)])
    finally:
        edge.stop()
    said = capsys.readouterr()
    assert code == HELD_EXIT == 4, said.err
    assert "held at the edge for review by the hospital's output checkers (0 of 1 approvals)" in said.err
    assert "held for review (0/1 approvals)" in said.err  # the progress line as it came
    assert not (out / "weights.safetensors").exists()
