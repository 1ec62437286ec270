"""A real RFC 3161 Time-Stamp Authority for tests: a test CA, TSA certificates (with or
without the critical timeStamping EKU), tokens built as CMS SignedData over TSTInfo, and
an HTTP server on 127.0.0.1 answering application/timestamp-query."""

from __future__ import annotations

import hashlib
import http.server
import itertools
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from asn1crypto import algos, cms, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.now(UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class Issued:
    cert: x509.Certificate
    key: object

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def make_ca(common_name: str = "Test TSA Root", issuer: Issued | None = None) -> Issued:
    """A self-signed root, or an intermediate CA when ``issuer`` is given."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(common_name))
            .issuer_name(issuer.cert.subject if issuer else _name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(issuer.key if issuer else key, hashes.SHA256()))
    return Issued(cert, key)


def make_tsa(ca: Issued, *, common_name: str = "Test TSA", eku: bool = True, eku_critical: bool = True,
             rsa_key: bool = True, not_after: datetime | None = None) -> Issued:
    key = rsa.generate_private_key(65537, 2048) if rsa_key else ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca.cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - timedelta(days=1)).not_valid_after(not_after or NOW + timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]),
                                        critical=eku_critical)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


@dataclass
class Authority:
    """Signs TSTInfo tokens with ``signer``; ``imprint_override`` answers for another
    digest (a TSA that lies or a mixed-up answer)."""

    signer: Issued
    extra_certs: list[Issued] = field(default_factory=list)
    imprint_override: bytes | None = None
    requests: int = 0
    _serials: itertools.count = field(default_factory=lambda: itertools.count(1))

    def respond(self, request_der: bytes) -> bytes:
        self.requests += 1
        request = tsp.TimeStampReq.load(request_der)
        imprint = request["message_imprint"]
        if self.imprint_override is not None:
            imprint = tsp.MessageImprint({"hash_algorithm": {"algorithm": "sha256"},
                                          "hashed_message": self.imprint_override})
        tst = tsp.TSTInfo({"version": "v1", "policy": "1.3.6.1.4.1.99999.1", "message_imprint": imprint,
                           "serial_number": next(self._serials),
                           "gen_time": datetime.now(UTC).replace(microsecond=0),
                           "nonce": request["nonce"].native})
        token = self.token(tst.dump(), with_certs=bool(request["cert_req"].native))
        return tsp.TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": token}).dump()

    def token(self, tst_der: bytes, *, with_certs: bool = True) -> cms.ContentInfo:
        cert = asn1_x509.Certificate.load(self.signer.der)
        attrs = cms.CMSAttributes([
            cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}),
            cms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(tst_der).digest()]}),
            cms.CMSAttribute({"type": "signing_certificate_v2", "values": [tsp.SigningCertificateV2({"certs": [
                tsp.ESSCertIDv2({"cert_hash": hashlib.sha256(self.signer.der).digest()})]})]}),
        ])
        signature, algorithm = self._sign(attrs.dump())
        signer_info = cms.SignerInfo({
            "version": "v1",
            "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber(
                {"issuer": cert.issuer, "serial_number": cert.serial_number})}),
            "digest_algorithm": {"algorithm": "sha256"}, "signed_attrs": attrs,
            "signature_algorithm": {"algorithm": algorithm}, "signature": signature})
        certs = [cert] + [asn1_x509.Certificate.load(c.der) for c in self.extra_certs] if with_certs else []
        signed = cms.SignedData({
            "version": "v3", "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha256"})],
            "encap_content_info": {"content_type": "tst_info", "content": tsp.TSTInfo.load(tst_der)},
            "certificates": certs, "signer_infos": [signer_info]})
        return cms.ContentInfo({"content_type": "signed_data", "content": signed})

    def _sign(self, data: bytes) -> tuple[bytes, str]:
        key = self.signer.key
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256()), "sha256_rsa"
        return key.sign(data, ec.ECDSA(hashes.SHA256())), "sha256_ecdsa"


class TsaServer:
    """The authority over HTTP on 127.0.0.1; ``close`` then ``start(port)`` brings it back."""

    def __init__(self, authority: Authority) -> None:
        self.authority = authority
        self.port = 0
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tsa"

    def start(self, port: int = 0) -> TsaServer:
        authority = self.authority

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Type") != "application/timestamp-query":
                    self.send_error(415)
                    return
                answer = authority.respond(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
