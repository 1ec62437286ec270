"""`rapha keygen`, `rapha run` and `rapha verify`, against the fake edge and its real dev chain."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from jupyter_rapha.cli import main
from jupyter_rapha.keystore import create_key, load_key
from jupyter_rapha.protocol.errors import BadInput
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.verify import verify_receipt_file
from tests.researcher.fake_edge import FakeEdge

CELL = """
import torch
model = torch.nn.Linear(1024, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
for epoch in range(rapha.epochs):
    for batch in rapha.loader(batch_size=8, shuffle=True):
        loss = torch.nn.functional.cross_entropy(model(batch["image"].flatten(1)), batch["finding"])
        opt.zero_grad(); loss.backward(); opt.step()
    rapha.log(loss=loss, epoch=epoch)
rapha.save(model)
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A fake edge, a registered key file and one completed `rapha run` output directory."""
    root = tmp_path_factory.mktemp("verify")
    key_path = root / "researcher.pem"
    key = create_key(key_path)
    cell = root / "cell.py"
    cell.write_text(CELL)
    with FakeEdge([key.public]) as edge:
        out = root / "out"
        code = main(["run", str(cell), "--edge", edge.url, "--dataset", "synthetic-cxr", "--budget", "24",
                     "--key", str(key_path), "--epochs", "2", "--out", str(out)])
        assert code == 0
        yield {"edge": edge, "key_path": key_path, "cell": cell, "out": out, "rpc": edge.url + "/chain"}


def copy_out(world, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    target.mkdir()
    for item in world["out"].iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target / "receipt.json"


def verify(receipt: Path, *extra: str) -> int:
    return main(["verify", str(receipt), *extra])


def test_run_writes_exactly_the_outputs(world):
    assert sorted(p.name for p in world["out"].iterdir()) == [
        "edge.pub", "metrics.json", "receipt.json", "weights.safetensors"]
    assert (world["out"] / "edge.pub").read_text().strip() == world["edge"].key.public.to_text()
    assert not [p for p in world["out"].parent.iterdir() if p.name.startswith(".out")]


def test_verify_passes_with_rpc(world, capsys):
    assert verify(world["out"] / "receipt.json", "--rpc", world["rpc"]) == 0
    out = capsys.readouterr().out
    assert "PASS signature" in out and "PASS anchor" in out and "edge.pub beside the receipt" in out


def test_verify_without_rpc_or_offline_fails_on_anchor(world, capsys):
    assert verify(world["out"] / "receipt.json") == 1
    assert "pass --rpc URL to check the anchor, or --offline" in capsys.readouterr().out
    assert verify(world["out"] / "receipt.json", "--offline") == 0


def test_verify_json_output(world, capsys):
    assert verify(world["out"] / "receipt.json", "--rpc", world["rpc"], "--json") == 0
    [report] = json.loads(capsys.readouterr().out)
    assert report["ok"] and {c["name"] for c in report["checks"]} >= {"signature", "weights", "metrics", "anchor"}


@pytest.mark.parametrize("where", ["payload-start", "payload-middle", "payload-end", "sig"])
def test_tampered_envelope_fails_signature(world, tmp_path, capsys, where):
    receipt_path = copy_out(world, tmp_path)
    document = json.loads(receipt_path.read_text())
    envelope = document["envelope"]
    if where == "sig":
        raw = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
        raw[5] ^= 1
        envelope["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    else:
        raw = bytearray(base64.b64decode(envelope["payload"]))
        index = {"payload-start": 0, "payload-middle": len(raw) // 2, "payload-end": len(raw) - 1}[where]
        raw[index] ^= 1
        envelope["payload"] = base64.b64encode(bytes(raw)).decode()
    receipt_path.write_text(json.dumps(document))
    assert verify(receipt_path, "--rpc", world["rpc"]) == 1
    assert "FAIL signature" in capsys.readouterr().out


def test_every_byte_of_the_signed_payload_matters(world):
    """Flip each byte of the signed statement in turn (sampled): none still verifies."""
    document = json.loads((world["out"] / "receipt.json").read_text())
    payload = base64.b64decode(document["envelope"]["payload"])
    from jupyter_rapha.verify import verify_document
    edge_key = world["edge"].key.public
    for index in range(0, len(payload), max(1, len(payload) // 64)):
        raw = bytearray(payload)
        raw[index] ^= 0x20
        tampered = json.loads(json.dumps(document))
        tampered["envelope"]["payload"] = base64.b64encode(bytes(raw)).decode()
        report = verify_document(tampered, edge_key, offline=True)
        assert not report.passed and report.failures()[0].name == "signature"


def test_wrong_edge_key_fails_signature(world, capsys):
    other = PrivateKey.generate().public.to_text()
    assert verify(world["out"] / "receipt.json", "--edge-key", other, "--rpc", world["rpc"]) == 1
    assert "FAIL signature" in capsys.readouterr().out


def test_no_edge_key_at_all(world, tmp_path, capsys):
    receipt_path = copy_out(world, tmp_path)
    (receipt_path.parent / "edge.pub").unlink()
    assert verify(receipt_path, "--offline") == 1
    assert "no edge public key: pass --edge-key" in capsys.readouterr().out


def test_different_anchor_transaction_fails_anchor(world, tmp_path, capsys):
    edge = world["edge"]
    other = edge.chain.anchor(bytes(32))  # a real transaction, committing to something else
    receipt_path = copy_out(world, tmp_path)
    document = json.loads(receipt_path.read_text())
    document["anchor"]["tx_hash"] = other["tx_hash"]
    receipt_path.write_text(json.dumps(document))
    assert verify(receipt_path, "--rpc", world["rpc"]) == 1
    assert "FAIL anchor" in capsys.readouterr().out


@pytest.mark.parametrize("field,value", [("envelope_sha256", "00" * 32), ("block_number", 999)])
def test_tampered_anchor_fields_fail_anchor(world, tmp_path, capsys, field, value):
    receipt_path = copy_out(world, tmp_path)
    document = json.loads(receipt_path.read_text())
    document["anchor"][field] = value
    receipt_path.write_text(json.dumps(document))
    assert verify(receipt_path, "--rpc", world["rpc"]) == 1
    assert "FAIL anchor" in capsys.readouterr().out


def test_unreachable_chain_fails_anchor(world):
    report = verify_receipt_file(world["out"] / "receipt.json", rpc_url="http://127.0.0.1:9/chain")
    assert not report.passed and report.failures()[0].name == "anchor"


def test_tampered_weights_and_metrics_fail_their_checks(world, tmp_path, capsys):
    receipt_path = copy_out(world, tmp_path)
    weights = receipt_path.parent / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    metrics = receipt_path.parent / "metrics.json"
    values = json.loads(metrics.read_text())
    values["loss"][0] += 1.0
    metrics.write_text(json.dumps(values))
    assert verify(receipt_path, "--offline") == 1
    out = capsys.readouterr().out
    assert "FAIL weights" in out and "FAIL metrics" in out


def test_missing_and_garbled_receipts(tmp_path, capsys):
    assert verify(tmp_path / "absent.json", "--offline") == 1
    garbled = tmp_path / "receipt.json"
    garbled.write_text("{not json")
    assert verify(garbled, "--offline") == 1
    assert capsys.readouterr().out.count("FAIL format") == 2


def test_verify_usage_errors():
    assert main(["verify"]) == 2
    assert main(["verify", "r.json", "--rpc", "http://127.0.0.1:1", "--offline"]) == 2


def test_run_refusal_leaves_nothing(world, tmp_path, capsys):
    cell = tmp_path / "bad.py"
    cell.write_text("import socket\n" + CELL)
    out = tmp_path / "out"
    code = main(["run", str(cell), "--edge", world["edge"].url, "--dataset", "synthetic-cxr", "--budget", "8",
                 "--key", str(world["key_path"]), "--out", str(out), "--no-preflight"])
    assert code == 1 and not out.exists() and list(tmp_path.iterdir()) == [cell]
    err = capsys.readouterr().err
    assert "denied by the scan gate" in err and "preflight skipped (--no-preflight)" in err


def test_run_preflight_stops_before_submitting(world, tmp_path, capsys):
    cell = tmp_path / "bad.py"
    cell.write_text("import torch\nimport socket\n" + CELL)
    before = len(world["edge"].jobs)
    code = main(["run", str(cell), "--edge", world["edge"].url, "--dataset", "synthetic-cxr", "--budget", "8",
                 "--key", str(world["key_path"]), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and len(world["edge"].jobs) == before and not (tmp_path / "out").exists()
    assert "preflight stopped the cell" in err and "2 | import socket" in err
    assert "edge fake-edge attests with unsafe_software (UNSAFE)" in err


def test_run_failure_names_type_and_line(world, tmp_path, capsys):
    cell = tmp_path / "bad.py"
    cell.write_text("x = 1\n\nraise ValueError('no')\n")
    code = main(["run", str(cell), "--edge", world["edge"].url, "--dataset", "synthetic-cxr", "--budget", "8",
                 "--key", str(world["key_path"]), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "ValueError at line 3 of the cell" in err and "    3 | raise ValueError('no')" in err


def test_run_refuses_a_foreign_out_dir(world, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code = main(["run", str(world["cell"]), "--edge", world["edge"].url, "--dataset", "synthetic-cxr",
                 "--budget", "8", "--key", str(world["key_path"]), "--out", str(tmp_path)])
    assert code == 1 and (tmp_path / "notes.txt").read_text() == "mine"


def test_run_usage_error_exits_2():
    assert main(["run", "cell.py", "--edge", "http://127.0.0.1:1"]) == 2


def test_keygen_writes_0600_and_refuses_to_overwrite(tmp_path, capsys):
    path = tmp_path / "keys" / "me.pem"
    assert main(["keygen", "--out", str(path)]) == 0
    line = capsys.readouterr().out.strip()
    assert line == load_key(path).public.to_text() and line.startswith("ed25519:")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    before = path.read_bytes()
    assert main(["keygen", "--out", str(path)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err and path.read_bytes() == before
    with pytest.raises(BadInput):
        create_key(path)
    assert main(["keygen", "--out", str(path), "--force"]) == 0 and path.read_bytes() != before


def test_default_key_path_follows_env(tmp_path, monkeypatch):
    from jupyter_rapha.keystore import default_key_path
    monkeypatch.setenv("RAPHA_KEY", str(tmp_path / "k.pem"))
    assert default_key_path() == tmp_path / "k.pem"
    monkeypatch.delenv("RAPHA_KEY")
    assert default_key_path() == Path("~/.config/rapha/researcher_ed25519.pem").expanduser()


@pytest.mark.parametrize("name, file_name", [("weights", "weights.safetensors"), ("metrics", "metrics.json")])
@pytest.mark.parametrize("mode", [("--offline",), ()])
def test_a_missing_output_is_a_skip_that_refuses_ok_unless_told(world, tmp_path, capsys, name, file_name, mode):
    receipt_path = copy_out(world, tmp_path)
    (receipt_path.parent / file_name).unlink()
    extra = mode or ("--rpc", world["rpc"])
    assert verify(receipt_path, *extra) == 1
    out = capsys.readouterr().out
    assert f"SKIP {name}" in out and f"pass --skip-{name}" in out and f"FAILED: {receipt_path} (check {name})" in out
    assert verify(receipt_path, *extra, f"--skip-{name}") == 0
    out = capsys.readouterr().out
    assert f"SKIP {name}" in out and f"OK: {receipt_path}" in out
    lines = [line.split()[1] for line in out.splitlines() if line[:4] in ("PASS", "SKIP", "WARN", "FAIL")]
    assert lines[:5] == ["format", "signature", "statement", "weights", "metrics"]


def test_verify_help_lists_exit_codes(capsys):
    assert main(["verify", "--help"]) == 0
    text = capsys.readouterr().out
    for code, meaning in (("0", "every check passed"), ("1", "a check failed"), ("2", "usage"), ("3", "pending")):
        assert any(line.strip().startswith(code) and meaning in line for line in text.splitlines()), (code, text)


def test_keygen_show_prints_the_existing_public_key_and_never_writes(tmp_path, capsys):
    path = tmp_path / "me.pem"
    assert main(["keygen", "--show", "--out", str(path)]) == 1
    assert "no researcher key" in capsys.readouterr().err and not path.exists()
    assert main(["keygen", "--out", str(path)]) == 0
    created = capsys.readouterr().out.strip()
    before = path.read_bytes()
    assert main(["keygen", "--show", "--out", str(path)]) == 0
    assert capsys.readouterr().out.strip() == created and path.read_bytes() == before
    assert main(["keygen", "--show", "--force", "--out", str(path)]) == 1 and path.read_bytes() == before


def test_every_rapha_option_has_help_and_there_is_a_version(capsys):
    from jupyter_rapha import __version__
    from jupyter_rapha.cli import _parser

    with pytest.raises(SystemExit):
        _parser().parse_args(["--version"])
    assert __version__ in capsys.readouterr().out
    subparsers = next(a for a in _parser()._actions if a.dest == "command").choices
    missing = [f"{name} {action.dest}" for name, sub in subparsers.items() for action in sub._actions
               if action.dest != "help" and not action.help]
    assert not missing, missing
