"""Artifacts and included files at a real edge: pretrained weights come into the job
bit-identical and are named in the receipt; an included module imports inside the job;
each wrong input is refused with a clear message before the job runs."""

from __future__ import annotations

import base64
import json
import pickle
import time

import pytest
import torch
from safetensors.torch import load, save_file

from jupyter_rapha.cli import main
from jupyter_rapha.client import EdgeClient, make_jobspec
from jupyter_rapha.inputs import file_sha256
from jupyter_rapha.keystore import create_key
from jupyter_rapha.protocol.errors import BadInput
from jupyter_rapha.protocol.job_inputs import ArtifactEntry, included_file

pytestmark = pytest.mark.slow

CELL = """
import torch
import helpers
from mylib.layers import scale

state = rapha.artifact("backbone")
assert helpers.total(state) == helpers.total(rapha.artifact("backbone"))
assert scale(2) == 6
for path in (rapha.artifacts["backbone"], helpers.__file__):  # the job reads its inputs, never changes them
    try:
        with open(path, "ab") as handle:
            handle.write(b"x")
    except OSError:
        pass
    else:
        raise AssertionError("an input was writable")
rapha.save(state)
"""


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    from tests.harness import init_edge, start_edge

    root = tmp_path_factory.mktemp("artifacts")
    key = init_edge(root / "edge", researcher=create_key(root / "me.pem"))
    with open(root / "edge" / "edge.toml", "a") as config:  # room for this file's small artifacts only
        config.write("\n[artifacts]\nmax_stored_mib = 1\n")
    running = start_edge(root / "edge")
    try:
        yield running, key, root
    finally:
        running.stop()


@pytest.fixture(scope="module")
def weights(edge):
    _, _, root = edge
    path = root / "backbone.safetensors"
    torch.manual_seed(0)
    save_file({"layer.weight": torch.randn(16, 8), "layer.bias": torch.randn(16),
               "steps": torch.tensor([3], dtype=torch.int64)}, str(path))
    return path


def spec_for(key, artifacts=(), includes=(), code="rapha.save({'w': torch.zeros(1)})\nimport torch\n"):
    return make_jobspec(code, "synthetic-cxr", ["image"], 4, 120, {"epochs": 1}, key.key_id,
                        artifacts=tuple(artifacts), includes=tuple(includes))


def test_an_artifact_arrives_bit_identical_and_the_receipt_names_it(edge, weights, capsys):
    running, key, root = edge
    (root / "cell.py").write_text(CELL)
    (root / "helpers.py").write_text("def total(state):\n    return sum(float(t.sum()) for t in state.values())\n")
    (root / "mylib").mkdir()
    (root / "mylib" / "__init__.py").write_text("")
    (root / "mylib" / "layers.py").write_text("FACTOR = 3\n\ndef scale(x):\n    return x * FACTOR\n")
    out = root / "out"
    code = main(["run", str(root / "cell.py"), "--edge", running.url, "--dataset", "synthetic-cxr", "--budget", "4",
                 "--key", str(root / "me.pem"), "--out", str(out), "--artifact", f"backbone={weights}",
                 "--include", str(root / "helpers.py"), "--include", str(root / "mylib")])
    captured = capsys.readouterr()
    assert code == 0, (captured.err, running.log()[-3000:])
    back = (out / "weights.safetensors").read_bytes()
    original = weights.read_bytes()
    assert back == original  # saved unchanged: the very bytes that went in
    assert {k: v.dtype for k, v in load(back).items()}["steps"] == torch.int64

    receipt = json.loads((out / "receipt.json").read_text())
    job = json.loads(base64.b64decode(receipt["envelope"]["payload"]))["predicate"]["job"]
    assert job["artifacts"] == [{"name": "backbone", "sha256": file_sha256(weights), "bytes": len(original)}]
    assert [f["path"] for f in job["code"]["files"]] == ["<cell>", "helpers.py", "mylib/__init__.py",
                                                        "mylib/layers.py"]
    # The job's staged copies are gone; the edge keeps the upload under the researcher's key.
    jobs = running.config / "state" / "jobs"
    assert not list(jobs.glob("*/inputs"))
    assert (running.config / "state" / "artifacts" / key.key_id / file_sha256(weights)).is_file()

    assert main(["verify", str(out / "receipt.json"), "--offline"]) == 0
    shown = capsys.readouterr().out
    assert f"artifact backbone: sha256 {file_sha256(weights)}, {len(original)} bytes" in shown
    assert f"code     sha256 {job['code']['sha256']} over 4 files" in shown


def test_an_artifact_changed_after_signing_is_refused(edge, weights, tmp_path):
    running, key, _ = edge
    client = EdgeClient(running.url, key)
    changed = tmp_path / "changed.safetensors"
    save_file({"layer.weight": torch.ones(16, 8)}, str(changed))
    with pytest.raises(BadInput, match="do not have sha256"):
        client.upload_artifact(str(changed), file_sha256(weights), changed.stat().st_size)


def test_a_spec_naming_bytes_never_uploaded_is_refused(edge):
    running, key, _ = edge
    client = EdgeClient(running.url, key)
    spec = spec_for(key, [ArtifactEntry("backbone", "cd" * 32, 100)])
    with pytest.raises(BadInput, match="was not uploaded to this edge"):
        client.submit(spec)


def test_a_pickle_uploaded_anyway_is_refused_at_submission(edge, tmp_path):
    running, key, _ = edge
    client = EdgeClient(running.url, key)
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"w": 1.0}, protocol=4))
    digest = file_sha256(path)
    client.upload_artifact(str(path), digest, path.stat().st_size)
    with pytest.raises(BadInput, match="not a safetensors file"):
        client.submit(spec_for(key, [ArtifactEntry("backbone", digest, path.stat().st_size)]))


def test_a_size_other_than_signed_is_refused(edge, weights):
    running, key, _ = edge
    client = EdgeClient(running.url, key)
    size = weights.stat().st_size
    client.upload_artifact(str(weights), file_sha256(weights), size)
    with pytest.raises(BadInput, match="the job spec says"):
        client.submit(spec_for(key, [ArtifactEntry("backbone", file_sha256(weights), size + 1)]))


def test_a_name_collision_is_refused(edge, weights):
    running, key, _ = edge
    client = EdgeClient(running.url, key)
    entry = ArtifactEntry("backbone", file_sha256(weights), weights.stat().st_size)
    document = spec_for(key, [entry]).to_dict()
    document["artifacts"] = document["artifacts"] * 2
    from jupyter_rapha.protocol.canonical import canonical_json

    with pytest.raises(BadInput, match="names an artifact twice"):
        client._json("POST", "/v1/jobs", canonical_json({"spec": document}))


def test_an_artifact_over_the_policy_limit_is_denied_before_the_job_runs(edge, weights):
    running, key, _ = edge
    data_path = running.config / "policies" / "data.json"
    original = data_path.read_text()
    data = json.loads(original)
    data["hospital"]["artifacts"]["max_artifact_bytes"] = 100
    data_path.write_text(json.dumps(data))
    try:
        client = EdgeClient(running.url, key)
        client.upload_artifact(str(weights), file_sha256(weights), weights.stat().st_size)
        job_id = client.submit(spec_for(key, [ArtifactEntry("backbone", file_sha256(weights),
                                                            weights.stat().st_size)]))
        status = client.wait(job_id, timeout=60)
    finally:
        data_path.write_text(original)
        time.sleep(0.01)
    assert status["state"] == "denied", status
    assert any("this edge takes at most 100 bytes of artifacts per job" in r for r in status["reasons"])
    assert {g["name"]: g["outcome"] for g in status["gates"]}["policy"] == "deny"
    assert "records_used" not in status.get("progress", {}) or status["progress"]["records_used"] == 0


def test_a_socket_import_in_an_included_file_is_found_with_its_file_and_line(edge):
    running, key, _ = edge
    client = EdgeClient(running.url, key)
    helpers = included_file("helpers.py", "import math\nimport socket\n")
    job_id = client.submit(spec_for(key, includes=[helpers], code="import helpers\nrapha.save({})\n"))
    status = client.wait(job_id, timeout=60)
    assert status["state"] == "denied", status
    assert any(r.startswith("scan: helpers.py line 2:") and "socket" in r for r in status["reasons"]), status


def test_preflight_stops_an_included_socket_import_before_it_leaves(edge, tmp_path, capsys):
    running, key, root = edge
    (tmp_path / "cell.py").write_text("import helpers\nrapha.save({})\n")
    (tmp_path / "helpers.py").write_text("import socket\n")
    code = main(["run", str(tmp_path / "cell.py"), "--edge", running.url, "--dataset", "synthetic-cxr",
                 "--budget", "4", "--key", str(root / "me.pem"), "--out", str(tmp_path / "out"),
                 "--include", str(tmp_path / "helpers.py")])
    err = capsys.readouterr().err
    assert code != 0
    assert "helpers.py line 1:" in err and "socket" in err, err


def test_an_upload_is_authenticated_before_its_body_is_read(edge, weights):
    import requests

    running, key, _ = edge
    digest = file_sha256(weights)
    unsigned = requests.put(f"{running.url}/v1/artifacts/{digest}", data=weights.read_bytes(), timeout=30)
    assert unsigned.status_code == 401
    other = EdgeClient(running.url, __import__("jupyter_rapha.protocol.keys", fromlist=["PrivateKey"])
                       .PrivateKey.generate())
    with pytest.raises(Exception, match="does not know your key"):
        other.upload_artifact(str(weights), digest, weights.stat().st_size)
    assert not list((running.config / "state" / "artifacts" / ".incoming").glob("*.part"))


def test_an_upload_over_the_route_limit_is_refused_from_its_length(edge):
    import socket

    from edge_kernel.artifacts import MAX_UPLOAD_BYTES

    running, _, _ = edge
    host, port = running.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(f"PUT /v1/artifacts/{'ab' * 32} HTTP/1.1\r\nHost: {host}\r\n"
                           f"Content-Length: {MAX_UPLOAD_BYTES + 1}\r\n\r\nxx".encode())
        answer = connection.recv(4096).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert "at most" in answer


def test_an_upload_past_the_researchers_quota_is_refused_naming_the_limit(edge, tmp_path):
    running, key, _ = edge
    big = tmp_path / "big.safetensors"
    save_file({"w": torch.zeros(300_000)}, str(big))  # 1.1 MiB, past the 1 MiB this edge keeps
    with pytest.raises(BadInput) as refused:
        EdgeClient(running.url, key).upload_artifact(str(big), file_sha256(big), big.stat().st_size)
    shown = refused.value.diagnostics()
    assert "past the 1 MiB it keeps per researcher (artifacts.max_stored_mib)" in shown, shown
    assert "artifacts.keep_unused_days" in shown
    assert not (running.config / "state" / "artifacts" / key.key_id / file_sha256(big)).exists()
    assert not list((running.config / "state" / "artifacts" / ".incoming").glob("*.part"))


def test_an_expired_artifact_is_pruned_at_the_next_upload_and_audited(edge, tmp_path):
    import os

    running, key, _ = edge
    client = EdgeClient(running.url, key)
    old, new = tmp_path / "old.safetensors", tmp_path / "new.safetensors"
    save_file({"w": torch.ones(3)}, str(old))
    save_file({"w": torch.ones(5)}, str(new))
    client.upload_artifact(str(old), file_sha256(old), old.stat().st_size)
    stored = running.config / "state" / "artifacts" / key.key_id / file_sha256(old)
    month_ago = time.time() - 31 * 86400  # past the default 30 days
    os.utime(stored, (month_ago, month_ago))
    client.upload_artifact(str(new), file_sha256(new), new.stat().st_size)
    assert not stored.exists()
    assert (stored.parent / file_sha256(new)).is_file()
    import sqlite3

    with sqlite3.connect(f"file:{running.config / 'state' / 'edge.sqlite'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT detail FROM audit WHERE event='artifact.prune'").fetchall()
    assert any(f"{key.key_id}/{file_sha256(old)}" in json.loads(row[0])["artifacts"] for row in rows)
