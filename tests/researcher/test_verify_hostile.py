"""`rapha verify` on hostile receipt files: a clear FAILED line and exit code 1, never a
traceback, whatever the file holds (issue #21)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jupyter_rapha.protocol.dsse import IN_TOTO_PAYLOAD_TYPE, sign_envelope
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.receipt import PREDICATE_TYPE, RECEIPT_FORMAT, STATEMENT_TYPE, sha256_hex, sign_receipt
from tests.receipts.receipt_factory import METRICS, WEIGHTS, predicate

EDGE = PrivateKey.generate()


def signed_over(value: dict) -> bytes:
    """A receipt the edge key signed over plain json.dumps, so that values canonical JSON
    refuses reach the verifier under a valid signature."""
    statement = {"_type": STATEMENT_TYPE, "predicateType": PREDICATE_TYPE, "predicate": value,
                 "subject": [{"name": "weights.safetensors", "digest": {"sha256": sha256_hex(WEIGHTS)}}]}
    envelope = sign_envelope(json.dumps(statement).encode(), IN_TOTO_PAYLOAD_TYPE, EDGE)
    return json.dumps({"format": RECEIPT_FORMAT, "envelope": envelope, "anchor": None}).encode()


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def with_predicate(**changes) -> bytes:
    return signed_over({**predicate(), **changes})


GOOD = json.dumps(sign_receipt(predicate(), sha256_hex(WEIGHTS), EDGE)).encode()
HOSTILE_RECEIPTS = {
    "nested brackets": b"[" * 100_000,
    "nested objects": b'{"format": ' * 20_000,
    "not UTF-8": b"\xff\xfe\x00{",
    "lone surrogate": b'{"format": "\\ud800"}',
    "a list": b"[1, 2, 3]",
    "huge integer": b'{"format": ' + b"9" * 5000 + b"}",
    "superscript version": with_predicate(receipt_version="\u00b2"),
    "job is null": with_predicate(job=None),
    "outputs is a list": with_predicate(outputs=[]),
    "edge is a string": with_predicate(edge="x"),
    "deep signed payload": signed_over({**predicate(), "job": nested(100)}),
    "payload type surrogate": GOOD.replace(b'"payloadType": "application', b'"payloadType": "\\udc00application'),
}
HOSTILE_METRICS = {"huge integer": b'{"loss": [1' + b"0" * 400 + b"]}", "nested": b"[" * 100_000,
                   "NaN": b'{"loss": [NaN]}', "lone surrogate": b'{"\\udfff": [1]}'}


def rapha_verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jupyter_rapha.cli", "verify", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def write(tmp_path):
    def receipt(name: str, body: bytes, metrics: bytes = json.dumps(METRICS).encode()) -> str:
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        (folder / "receipt.json").write_bytes(body)
        (folder / "weights.safetensors").write_bytes(WEIGHTS)
        (folder / "metrics.json").write_bytes(metrics)
        return str(folder / "receipt.json")
    return receipt


def assert_failed_cleanly(result: subprocess.CompletedProcess, what: str) -> None:
    assert "Traceback" not in result.stderr + result.stdout, (what, result.stderr[-2000:])
    assert result.returncode == 1, (what, result.returncode, result.stdout, result.stderr[-2000:])
    assert "FAILED" in result.stdout, (what, result.stdout)


def test_hostile_receipt_files_fail_with_a_message_not_a_traceback(write):
    paths = {name: write(name, body) for name, body in HOSTILE_RECEIPTS.items()}
    for name, path in paths.items():
        assert_failed_cleanly(rapha_verify(path, "--edge-key", EDGE.public.to_text(), "--offline"), name)
    # one run over all of them, with an RPC URL (which imports web3 and with it py_ecc)
    result = rapha_verify(*paths.values(), "--edge-key", EDGE.public.to_text(), "--rpc", "http://127.0.0.1:9/chain")
    assert_failed_cleanly(result, "all at once")
    assert f"{len(paths)} FAILED" in result.stdout


def test_hostile_metrics_beside_a_good_receipt_fail_the_metrics_not_the_verifier(write):
    for name, metrics in HOSTILE_METRICS.items():
        result = rapha_verify(write(name, GOOD, metrics), "--edge-key", EDGE.public.to_text(), "--offline", "--json")
        assert "Traceback" not in result.stderr, (name, result.stderr[-2000:])
        assert result.returncode == 1, (name, result.stdout)
        assert json.loads(result.stdout)[0]["outcome"] == "failed"


def test_the_good_receipt_still_verifies_offline(write):
    result = rapha_verify(write("good", GOOD), "--edge-key", EDGE.public.to_text(), "--offline")
    assert result.returncode == 0, result.stdout + result.stderr
