"""HTTPS at the edge: with a certificate configured the edge speaks only TLS, a client
trusting the hospital's CA bundle runs jobs, and one that does not is refused."""

from __future__ import annotations

import datetime
import ipaddress

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jupyter_rapha.client import EdgeClient
from jupyter_rapha.protocol.errors import BadInput, Fault
from tests.harness import complete_job, init_edge, start_edge

pytestmark = pytest.mark.slow


def self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "tls.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return tmp_path / "tls.pem", tmp_path / "tls.key"


def test_edge_over_https(tmp_path, monkeypatch):
    root = tmp_path / "edge"
    key = init_edge(root, records=32)
    cert, private = self_signed(tmp_path)
    toml = (root / "edge.toml").read_text().replace('tls_cert = ""', f'tls_cert = "{cert}"') \
        .replace('tls_key = ""', f'tls_key = "{private}"')
    (root / "edge.toml").write_text(toml)
    edge = start_edge(root)
    try:
        assert edge.url.startswith("https://")
        with pytest.raises(requests.ConnectionError):
            requests.get(edge.url.replace("https://", "http://") + "/v1/edge", timeout=5)
        monkeypatch.delenv("RAPHA_CA_BUNDLE", raising=False)
        with pytest.raises(Fault):
            EdgeClient(edge.url, key).edge_info()  # not trusted: refused, not ignored
        monkeypatch.setenv("RAPHA_CA_BUNDLE", str(cert))
        client = EdgeClient(edge.url, key)
        job_id = complete_job(client, key, "import torch\nrapha.save({'w': torch.zeros(1)})\n")
        assert client.receipt(job_id)["envelope"]
    finally:
        edge.stop()


def test_half_a_tls_configuration_stops_the_start(tmp_path):
    from edge_kernel.settings import load_settings
    root = tmp_path / "edge"
    init_edge(root, records=4)
    (root / "edge.toml").write_text((root / "edge.toml").read_text().replace('tls_cert = ""', 'tls_cert = "x.pem"'))
    with pytest.raises(BadInput):
        load_settings(root)
