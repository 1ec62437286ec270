"""Preflight against a real demo edge's published policy: a cell that imports socket is
stopped before it is submitted, with its line; a policy refusal is explained; a clean cell
goes through, and its receipt's attestation quote is re-checked by `rapha verify`."""

from __future__ import annotations

import base64
import copy

import pytest
import requests

from jupyter_rapha.cli import main
from jupyter_rapha.client import EdgeClient
from jupyter_rapha.routing.catalogs import CatalogRefused, verify_policy
from jupyter_rapha.keystore import create_key
from jupyter_rapha.protocol.keys import PrivateKey, load_public_key
from jupyter_rapha.protocol.policy import PolicyBundle
from tests.harness import init_edge, start_edge

CELL = """
import torch
model = torch.nn.Linear(32 * 32, 2)
for batch in rapha.loader(batch_size=8):
    loss = torch.nn.functional.cross_entropy(model(batch["image"].flatten(1)), batch["finding"])
rapha.log(loss=loss.item())
rapha.save(model)
"""


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    root = tmp_path_factory.mktemp("preflight-edge")
    key = create_key(root / "me.pem")
    init_edge(root / "edge", researcher=key)
    running = start_edge(root / "edge")
    try:
        yield running, root
    finally:
        running.stop()


def client(edge) -> EdgeClient:
    from jupyter_rapha.keystore import load_key

    running, root = edge
    return EdgeClient(running.url, load_key(root / "me.pem"))


def dataset(edge) -> str:
    return client(edge).datasets()[0]["name"]


def run(edge, cell_text: str, tmp_path, *extra: str) -> int:
    running, root = edge
    cell = tmp_path / "cell.py"
    cell.write_text(cell_text)
    return main(["run", str(cell), "--edge", running.url, "--dataset", dataset(edge), "--key", str(root / "me.pem"),
                 "--out", str(tmp_path / "out"), *extra])


def test_published_policy_is_signed_and_matches_its_digest(edge):
    edge_client = client(edge)
    pinned = load_public_key(edge_client.edge_info()["public_key"])
    document = edge_client.policy()
    published = verify_policy(document, pinned, "demo")
    assert PolicyBundle.from_texts(published["modules"], published["data_json"]).digest == published["bundle_sha256"]
    assert published["researcher"]["name"] == "alice" and published["edge"]["demo"] is True
    assert not any(name.endswith("_test.rego") for name in published["modules"])
    tampered = copy.deepcopy(document)
    payload = bytearray(base64.b64decode(tampered["envelope"]["payload"]))
    payload[payload.index(b"package")] ^= 0x20
    tampered["envelope"]["payload"] = base64.b64encode(bytes(payload)).decode()
    with pytest.raises(CatalogRefused):
        verify_policy(tampered, pinned, "demo")
    with pytest.raises(CatalogRefused):  # signed, but by another key than the one pinned
        verify_policy(document, PrivateKey.generate().public, "demo")
    assert requests.get(edge[0].url + "/v1/policy", timeout=10).status_code == 401  # researchers only (S8)


def test_socket_cell_is_stopped_before_submission_with_its_line(edge, tmp_path, capsys):
    code = run(edge, "import torch\nx = 1\nimport socket\n" + CELL, tmp_path, "--budget", "16")
    err = capsys.readouterr().err
    assert code == 1 and "preflight stopped the cell" in err
    assert "line 3" in err and "3 | import socket" in err
    assert "attests with unsafe_software (UNSAFE)" in err
    assert client(edge).jobs() == [] and not (tmp_path / "out").exists()


def test_policy_dry_run_refusal_is_explained(edge, tmp_path, capsys):
    code = run(edge, CELL, tmp_path, "--budget", "16", "--fields", "image,finding,patient_name")
    err = capsys.readouterr().err
    assert code == 1 and "preflight stopped the cell" in err and "the edge's policy would refuse the job" in err
    assert client(edge).jobs() == []


def test_clean_cell_goes_through_and_its_quote_is_rechecked(edge, tmp_path, capsys):
    running, _ = edge
    assert run(edge, CELL, tmp_path, "--budget", "16") in (0, 3)
    assert len(client(edge).jobs()) == 1
    capsys.readouterr()
    receipt = str(tmp_path / "out" / "receipt.json")
    assert main(["verify", receipt, "--offline"]) == 0
    out = capsys.readouterr().out
    assert "WARN attestation  UNSAFE software stand-in (demo only): bound to this job" in out
    assert main(["verify", receipt, "--offline", "--require-tee"]) == 1
