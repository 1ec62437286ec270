"""RFC 3161 anchors: a real TSA (test CA, critical timeStamping EKU, CMS tokens over HTTP on
127.0.0.1), the pure verifier with its negative cases, TsaAnchor's checks, and an edge
configured with chain.backend = "rfc3161" whose receipts verify against the TSA's root,
including a TSA outage (released pending, timestamped once the TSA is back)."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import socket
import subprocess
import time
from datetime import timedelta

from cryptography.hazmat.primitives import serialization

import pytest

from edge_kernel.anchor.tsa import TsaAnchor
from edge_kernel.settings import load_settings
from jupyter_rapha.client import EdgeClient
from jupyter_rapha.protocol.anchor_proof import batch_tree
from jupyter_rapha.protocol.errors import AnchorFault, BadInput, VerificationError
from jupyter_rapha.protocol.keys import PrivateKey, load_public_key
from jupyter_rapha.protocol.receipt import envelope_digest, sign_receipt, verify_receipt
from jupyter_rapha.protocol.timestamp import (check_response_token, timestamp_anchor, timestamp_request,
                                              token_from_response, verify_timestamp_anchor)
from tests.harness import complete_job, init_edge, set_chain_backend, start_edge
from tests.receipts import receipt_factory
from tests.receipts.tsa_authority import NOW, Authority, TsaServer, make_ca, make_tsa

NONCE = 0x1234_5678_9ABC


@pytest.fixture(scope="module")
def pki():
    ca = make_ca()
    return {"ca": ca, "tsa": make_tsa(ca), "other_ca": make_ca("Other Root")}


def stamped(authority: Authority, count: int = 5) -> tuple[list[str], list[dict]]:
    """``count`` envelope digests, one batch, one token from ``authority``."""
    digests = [hashlib.sha256(f"envelope {i}".encode()).hexdigest() for i in range(count)]
    tree = batch_tree(digests)
    token = token_from_response(authority.respond(timestamp_request(tree.root, NONCE)))
    return digests, [timestamp_anchor(tree, i, tsa="test-tsa", token_der=token, gen_time="") for i in range(count)]


def with_token(anchor: dict, token: bytes) -> dict:
    return dict(anchor, token=base64.b64encode(token).decode())


# -- the pure verifier ----------------------------------------------------------------------

def test_every_receipt_of_a_batch_verifies_against_the_root_ca_or_the_tsa_cert(pki):
    digests, anchors = stamped(Authority(pki["tsa"]))
    for digest, anchor in zip(digests, anchors, strict=True):
        ok, detail = verify_timestamp_anchor(anchor, digest, pki["ca"].pem)
        assert ok, detail
        assert "CN=Test TSA <- CN=Test TSA Root" in detail
    assert verify_timestamp_anchor(anchors[0], digests[0], pki["tsa"].pem)[0]


def test_ecdsa_tsa_under_an_intermediate_carried_in_the_token(pki):
    intermediate = make_ca("Test TSA Intermediate", issuer=pki["ca"])
    tsa = make_tsa(intermediate, rsa_key=False)
    digests, anchors = stamped(Authority(tsa, extra_certs=[intermediate]))
    ok, detail = verify_timestamp_anchor(anchors[2], digests[2], pki["ca"].pem)
    assert ok and "Intermediate" in detail, detail
    assert not verify_timestamp_anchor(stamped(Authority(tsa))[1][0], digests[0], pki["ca"].pem)[0]  # link missing


def test_tampered_token_bytes_are_refused(pki):
    digests, anchors = stamped(Authority(pki["tsa"]))
    token = base64.b64decode(anchors[0]["token"])
    signature_byte = len(token) - 5
    gen_time_byte = token.index(NOW.strftime("%Y").encode())  # inside the signed TSTInfo
    key_byte = token.index(pki["tsa"].der[-300:-280])  # inside the embedded certificate's key
    for position in (signature_byte, gen_time_byte, key_byte):
        tampered = bytearray(token)
        tampered[position] ^= 0x01
        ok, detail = verify_timestamp_anchor(with_token(anchors[0], bytes(tampered)), digests[0], pki["ca"].pem)
        assert not ok, position
    # Not one bit anywhere, signed or not, can change without the token being refused.
    accepted = []
    for position in range(len(token)):
        tampered = bytearray(token)
        tampered[position] ^= 0x01
        if verify_timestamp_anchor(with_token(anchors[0], bytes(tampered)), digests[0], pki["ca"].pem)[0]:
            accepted.append(position)
    assert accepted == []
    assert not verify_timestamp_anchor(with_token(anchors[0], token + b"\0"), digests[0], pki["ca"].pem)[0]
    assert not verify_timestamp_anchor(with_token(anchors[0], b""), digests[0], pki["ca"].pem)[0]
    assert not verify_timestamp_anchor(dict(anchors[0], token="not base64!"), digests[0], pki["ca"].pem)[0]


def test_token_for_another_root_is_refused(pki):
    digests, anchors = stamped(Authority(pki["tsa"], imprint_override=hashlib.sha256(b"another").digest()))
    ok, detail = verify_timestamp_anchor(anchors[1], digests[1], pki["ca"].pem)
    assert not ok and "different root" in detail


@pytest.mark.parametrize("eku", [False, "non-critical"])
def test_tsa_cert_without_the_critical_timestamping_eku_is_refused(pki, eku):
    signer = make_tsa(pki["ca"], eku=bool(eku), eku_critical=False)
    digests, anchors = stamped(Authority(signer))
    ok, detail = verify_timestamp_anchor(anchors[0], digests[0], pki["ca"].pem)
    assert not ok and "extended key usage" in detail


def test_tsa_cert_not_chaining_to_the_trust_anchor_is_refused(pki):
    foreign = make_tsa(pki["other_ca"])
    digests, anchors = stamped(Authority(foreign, extra_certs=[pki["other_ca"]]))  # it even brings its root
    ok, detail = verify_timestamp_anchor(anchors[0], digests[0], pki["ca"].pem)
    assert not ok and "chain" in detail
    assert verify_timestamp_anchor(anchors[0], digests[0], pki["other_ca"].pem)[0]


def test_gen_time_outside_the_certificate_validity_is_refused(pki):
    expired = make_tsa(pki["ca"], not_after=NOW - timedelta(hours=1))
    digests, anchors = stamped(Authority(expired))
    ok, detail = verify_timestamp_anchor(anchors[0], digests[0], pki["ca"].pem)
    assert not ok and "validity" in detail


def test_wrong_inclusion_proofs_are_refused(pki):
    digests, anchors = stamped(Authority(pki["tsa"]))
    ca = pki["ca"].pem
    swapped = dict(anchors[1], batch=dict(anchors[1]["batch"], proof=anchors[2]["batch"]["proof"]))
    moved = dict(anchors[1], batch=dict(anchors[1]["batch"], index=3))
    flipped = dict(anchors[1], batch=dict(anchors[1]["batch"], proof=["00" * 32] + anchors[1]["batch"]["proof"][1:]))
    for bad in (swapped, moved, flipped):
        ok, detail = verify_timestamp_anchor(bad, digests[1], ca)
        assert not ok and "inclusion proof" in detail, detail
    # the anchor of one receipt cannot be borrowed by another envelope
    assert not verify_timestamp_anchor(dict(anchors[1], envelope_sha256=digests[2]), digests[2], ca)[0]
    assert not verify_timestamp_anchor(anchors[1], digests[1], b"")[0]  # no trust anchor: refuse


def test_nonce_must_answer_the_request(pki):
    digests, anchors = stamped(Authority(pki["tsa"]))
    token = base64.b64decode(anchors[0]["token"])
    root = bytes.fromhex(anchors[0]["batch"]["root"])
    assert check_response_token(token, root, NONCE, pki["ca"].pem).nonce == NONCE
    with pytest.raises(VerificationError, match="nonce"):
        check_response_token(token, root, NONCE + 1, pki["ca"].pem)


def test_verify_receipt_checks_the_timestamp_only_with_a_trust_anchor(pki):
    edge_key = PrivateKey.generate()
    documents = [sign_receipt(receipt_factory.predicate(job_id=f"{i:032d}"), "ab" * 32, edge_key) for i in range(3)]
    tree = batch_tree([envelope_digest(d["envelope"]) for d in documents])
    token = token_from_response(Authority(pki["tsa"]).respond(timestamp_request(tree.root, NONCE)))
    for index, document in enumerate(documents):
        document["anchor"] = timestamp_anchor(tree, index, tsa="t", token_der=token, gen_time="")
    checked = verify_receipt(documents[1], edge_key.public, tsa_trust=pki["ca"].pem)
    assert checked.ok(), checked.checks
    unchecked = verify_receipt(documents[1], edge_key.public)
    assert [c.status for c in unchecked.checks if c.name in ("inclusion", "anchor")] == ["pass", "skipped"]
    wrong_trust = verify_receipt(documents[1], edge_key.public, tsa_trust=pki["other_ca"].pem)
    assert not wrong_trust.ok() and wrong_trust.checks[-1].status == "fail"


# -- interoperability with an independent implementation (OpenSSL's ts) ------------------------

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@needs_openssl
@pytest.mark.parametrize("ess_cert_id", ["sha1", "sha256"])  # ESSCertID (v1) and ESSCertIDv2
def test_tokens_from_openssl_ts_verify_here(tmp_path, pki, ess_cert_id):
    (tmp_path / "tsa.pem").write_bytes(pki["tsa"].pem)
    (tmp_path / "ca.pem").write_bytes(pki["ca"].pem)
    (tmp_path / "tsa.key").write_bytes(pki["tsa"].key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "serial").write_text("01\n")
    (tmp_path / "ts.cnf").write_text(
        f"[tsa]\ndefault_tsa = t\n[t]\nserial = {tmp_path}/serial\nsigner_cert = {tmp_path}/tsa.pem\n"
        f"signer_key = {tmp_path}/tsa.key\ncerts = {tmp_path}/ca.pem\nsigner_digest = sha256\n"
        f"default_policy = 1.2.3.4.1\ndigests = sha256\ness_cert_id_alg = {ess_cert_id}\n")
    digests = [hashlib.sha256(bytes([i])).hexdigest() for i in range(3)]
    tree = batch_tree(digests)
    (tmp_path / "req.tsq").write_bytes(timestamp_request(tree.root, NONCE))
    subprocess.run(["openssl", "ts", "-reply", "-config", str(tmp_path / "ts.cnf"), "-queryfile",
                    str(tmp_path / "req.tsq"), "-out", str(tmp_path / "resp.tsr")], check=True, capture_output=True)
    token = token_from_response((tmp_path / "resp.tsr").read_bytes())
    assert check_response_token(token, tree.root, NONCE, pki["ca"].pem).nonce == NONCE
    anchor = timestamp_anchor(tree, 1, tsa="openssl", token_der=token, gen_time="")
    assert verify_timestamp_anchor(anchor, digests[1], pki["ca"].pem)[0]


@needs_openssl
def test_tokens_from_the_test_tsa_verify_with_openssl_ts(tmp_path, pki):
    root = hashlib.sha256(b"root").digest()
    (tmp_path / "resp.tsr").write_bytes(Authority(pki["tsa"]).respond(timestamp_request(root, NONCE)))
    (tmp_path / "ca.pem").write_bytes(pki["ca"].pem)
    done = subprocess.run(["openssl", "ts", "-verify", "-digest", root.hex(), "-in", str(tmp_path / "resp.tsr"),
                           "-CAfile", str(tmp_path / "ca.pem")], capture_output=True, text=True)
    assert done.returncode == 0 and "Verification: OK" in done.stdout, done.stderr


# -- the edge's TsaAnchor ----------------------------------------------------------------------

def test_tsa_anchor_refuses_answers_it_cannot_trust(pki):
    root = hashlib.sha256(b"root").digest()
    server = TsaServer(Authority(make_tsa(pki["ca"], eku=False))).start()
    try:
        with pytest.raises(AnchorFault, match="extended key usage"):
            TsaAnchor(server.url, pki["ca"].pem, timeout=5).sign_anchor(root)
        server.authority.signer = make_tsa(pki["other_ca"])
        with pytest.raises(AnchorFault, match="chain"):
            TsaAnchor(server.url, pki["ca"].pem, timeout=5).sign_anchor(root)
        server.authority.signer = pki["tsa"]
        signed = TsaAnchor(server.url, pki["ca"].pem, timeout=5).sign_anchor(root)
        assert signed.tx_hash.startswith("tsa:") and signed.nonce == 0
    finally:
        server.close()


def test_tsa_anchor_times_out_and_reports_down(pki):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection, never answers
    try:
        started = time.monotonic()
        with pytest.raises(AnchorFault, match="timestamp authority"):
            anchor = TsaAnchor(f"http://127.0.0.1:{silent.getsockname()[1]}/", pki["ca"].pem, timeout=0.5)
            anchor.sign_anchor(b"\1" * 32)
        assert time.monotonic() - started < 5
    finally:
        silent.close()
    with pytest.raises(AnchorFault, match="timestamp authority"):
        TsaAnchor(f"http://127.0.0.1:{free_port()}/", pki["ca"].pem, timeout=2).sign_anchor(b"\1" * 32)


def test_settings_require_a_tsa_url_and_certificate(tmp_path):
    (tmp_path / "edge.toml").write_text('[edge]\nid = "e"\n[chain]\nbackend = "rfc3161"\ntsa_url = "http://127.0.0.1:1/"\n')
    with pytest.raises(BadInput, match="tsa_certificate"):
        load_settings(tmp_path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- a real edge anchoring through the TSA ----------------------------------------------------

CELL = "import torch\nrapha.log(loss=0.5)\nrapha.save({'w': torch.zeros(2)})\n"


def configure_tsa(root, url: str, certificate_pem: bytes) -> None:
    (root / "tsa.pem").write_bytes(certificate_pem)
    set_chain_backend(root, f'backend = "rfc3161"\ntsa_url = "{url}"\ntsa_certificate = "tsa.pem"')


def run_job(client: EdgeClient, key, seed: int) -> str:
    return complete_job(client, key, CELL + f"# {seed}\n")


def wait_timestamped(client: EdgeClient, job_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        receipt = client.receipt(job_id)
        if receipt["anchor"].get("method") == "rfc3161-batch":
            return receipt
        time.sleep(0.3)
    raise AssertionError(f"not timestamped: {receipt['anchor']}")


def assert_cli_checks_the_timestamp(tmp_path, receipt, edge_key_text, trust_pem):
    import json
    import sys
    out = tmp_path / "cli"
    out.mkdir()
    (out / "receipt.json").write_text(json.dumps(receipt))
    (out / "edge.pub").write_text(edge_key_text)
    (out / "ca.pem").write_bytes(trust_pem)
    verify = [sys.executable, "-m", "jupyter_rapha.cli", "verify", str(out / "receipt.json"),
              "--skip-weights", "--skip-metrics"]  # this check is about the timestamp anchor
    ok = subprocess.run([*verify, "--tsa-cert", str(out / "ca.pem")], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert re.search(r"PASS anchor", ok.stdout), ok.stdout
    unchecked = subprocess.run(verify, capture_output=True, text=True, timeout=60)
    assert unchecked.returncode == 1 and "--tsa-cert" in unchecked.stdout, unchecked.stdout
    offline = subprocess.run([*verify, "--offline"], capture_output=True, text=True, timeout=60)
    assert offline.returncode == 0, offline.stdout


@pytest.mark.slow
def test_edge_timestamps_receipts_and_survives_a_tsa_outage(tmp_path, pki):
    root = tmp_path / "edge"
    key = init_edge(root, records=32)
    server = TsaServer(Authority(pki["tsa"])).start()
    configure_tsa(root, server.url, pki["tsa"].pem)  # the edge checks answers against the TSA cert itself
    edge = start_edge(root)
    try:
        client = EdgeClient(edge.url, key)
        edge_key = load_public_key(client.edge_info()["public_key"])
        first = client.receipt(run_job(client, key, 0))
        assert first["anchor"]["method"] == "rfc3161-batch", first["anchor"]
        checked_first = verify_receipt(first, edge_key, tsa_trust=pki["ca"].pem)
        assert checked_first.ok()
        # the batch's timestamped root commits to the edge's audit head too
        assert first["anchor"]["batch"]["audit_head"]["entries"] > 0
        assert [c.status for c in checked_first.checks if c.name == "audit head"] == ["pass"]
        assert_cli_checks_the_timestamp(tmp_path, first, client.edge_info()["public_key"], pki["ca"].pem)

        server.close()  # the TSA goes down: results still leave, marked pending
        job_id = run_job(client, key, 1)
        pending = client.receipt(job_id)
        assert pending["anchor"]["status"] == "pending"
        assert verify_receipt(pending, edge_key, tsa_trust=pki["ca"].pem).pending

        requests_before = server.authority.requests
        server.start(server.port)  # back on the same URL: the outbox retries
        late = wait_timestamped(client, job_id)
        checked = verify_receipt(late, edge_key, tsa_trust=pki["ca"].pem)
        assert checked.ok(), checked.checks
        assert late["envelope"] == pending["envelope"]
        assert server.authority.requests == requests_before + 1  # one token for the waiting batch
    finally:
        edge.stop()
        server.close()


def test_widget_shows_the_timestamp_authority():
    from jupyter_rapha.widget import ReceiptWidget
    receipt = {"format": "rapha-receipt/v1", "envelope": {}, "anchor": {
        "method": "rfc3161-batch", "tsa": "http://tsa.example/", "gen_time": "2026-11-27T10:00:00Z",
        "token": "", "envelope_sha256": "00" * 32, "batch": {"root": "ab" * 32, "index": 0, "size": 1, "proof": []}}}
    widget = ReceiptWidget(receipt, None)
    assert "RFC 3161 timestamp by http://tsa.example/" in widget._repr_html_()
    assert "RFC 3161 timestamp by http://tsa.example/" in repr(widget)
