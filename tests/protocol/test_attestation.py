"""The pure quote verifier against real Intel DCAP quotes (see tests/data/attestation/README.md)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from jupyter_rapha.protocol.attestation import (
    INTEL_SGX_ROOT_CA_PEM, INTEL_SGX_ROOT_CA_SHA256, NO_COLLATERAL, CollateralResult, OfflineCollateral,
    RuntimeMeasurement, binding_commitment, make_software_quote, parse_quote, report_data_for, verify_quote,
)
from jupyter_rapha.protocol.errors import BadInput
from jupyter_rapha.protocol.keys import PrivateKey

DATA = Path(__file__).resolve().parents[1] / "data" / "attestation"
NOW = datetime(2026, 11, 27, tzinfo=UTC)
TRUSTEE_TDX = "tdx_v4_trustee_debug_td.dat"
GCP_TDX = "tdx_v4_go-tdx-guest_gcp_cos113_padded.dat"
PHALA_SGX = "sgx_v3_phala_dcap-qvl.dat"
OCCLUM_SGX = "sgx_v3_trustee_occlum_debug.dat"
ALL = (TRUSTEE_TDX, GCP_TDX, PHALA_SGX, OCCLUM_SGX)
TRUSTEE_REPORT_DATA = bytes.fromhex(
    "7c71fe2c86eff65a7cf8dbc22b3275689fd0464a267baced1bf94fc1324656aeb755da3d44d098c0c87382f3a5f85b45"
    "c8a28fee1d3bdb38342bf96671501429")
# (start, end) of each part in the logical quote, by version.
REGIONS = {
    3: {"header": (0, 48), "body": (48, 432), "signature_len": (432, 436), "signature": (436, 500),
        "attestation_key": (500, 564), "qe_report": (564, 948), "qe_report_signature": (948, 1012),
        "qe_auth": (1012, 1046), "cert_header": (1046, 1052), "cert_chain": (1052, None)},
    4: {"header": (0, 48), "body": (48, 632), "signature_len": (632, 636), "signature": (636, 700),
        "attestation_key": (700, 764), "qe_cert_header": (764, 770), "qe_report": (770, 1154),
        "qe_report_signature": (1154, 1218), "qe_auth": (1218, 1252), "cert_header": (1252, 1258),
        "cert_chain": (1258, None)},
}


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def full_policy(data: bytes) -> dict:
    """Policy data that accepts exactly this quote (debug allowed), for tamper tests."""
    quote = parse_quote(data)
    return {"allow_debug": True, "measurements": {quote.tee: [quote.body.measurements()]}}


def verify_as_recorded(data: bytes, *, original: bytes | None = None, **overrides):
    """Verify with the policy and report data that the untampered ``original`` satisfies."""
    source = original if original is not None else data
    args = {"expected_report_data": parse_quote(source).report_data, "now": NOW, "allowlist": full_policy(source)}
    args.update(overrides)
    return verify_quote(data, **args)


def test_embedded_root_is_the_recorded_intel_root() -> None:
    assert INTEL_SGX_ROOT_CA_PEM == load("intel_sgx_root_ca.pem")
    der = x509.load_pem_x509_certificate(INTEL_SGX_ROOT_CA_PEM).public_bytes(serialization.Encoding.DER)
    assert hashlib.sha256(der).hexdigest() == INTEL_SGX_ROOT_CA_SHA256


@pytest.mark.parametrize("name", ALL)
def test_recorded_quotes_verify_except_tcb_which_needs_collateral(name: str) -> None:
    result = verify_as_recorded(load(name))
    assert result.ok(allow_skipped=True), result.failures()
    assert not result.ok()  # the TCB check is skipped, not pretended
    assert result.check("tcb").status == "skipped" and result.tcb_status == NO_COLLATERAL
    for check in ("quote_signature", "qe_binding", "pck_root", "pck_chain", "pck_validity", "qe_report_signature"):
        assert result.check(check).status == "pass"


@pytest.mark.parametrize("name,kind,version,length,debug", [
    (TRUSTEE_TDX, "tdx", 4, 4936, True), (GCP_TDX, "tdx", 4, 4935, False),
    (PHALA_SGX, "sgx", 3, 4600, False), (OCCLUM_SGX, "sgx", 3, 4733, True)])
def test_parsed_fields_match_provenance(name: str, kind: str, version: int, length: int, debug: bool) -> None:
    quote = parse_quote(load(name))
    assert (quote.tee, quote.version, quote.length, quote.debug) == (kind, version, length, debug)


def test_known_measurements() -> None:
    tdx = parse_quote(load(TRUSTEE_TDX)).body.measurements()
    assert tdx["mrtd"].startswith("705ee9381b8633a9") and tdx["td_attributes"] == "0100001000000000"
    sgx = parse_quote(load(PHALA_SGX)).body.measurements()
    assert sgx["mrenclave"] == "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"


@pytest.mark.parametrize("name", (TRUSTEE_TDX, OCCLUM_SGX))
def test_debug_quotes_are_refused_by_default_policy(name: str) -> None:
    policy = full_policy(load(name))
    del policy["allow_debug"]
    result = verify_as_recorded(load(name), allowlist=policy)
    assert result.debug is True and result.check("debug").status == "fail"
    assert not result.ok(allow_skipped=True)
    assert verify_as_recorded(load(name), allowlist=None).check("debug").status == "fail"


def test_padding_after_logical_end_is_ignored_and_not_hashed() -> None:
    data = load(GCP_TDX)
    logical = data[:4935]
    assert not any(data[4935:])
    padded, trimmed = verify_as_recorded(data), verify_as_recorded(logical)
    assert padded.ok(allow_skipped=True) and trimmed.ok(allow_skipped=True)
    assert padded.quote_sha256 == trimmed.quote_sha256 == hashlib.sha256(logical).hexdigest()
    changed = bytearray(data)
    changed[6000] ^= 0xFF  # not covered by any signature: documented as irrelevant
    assert verify_as_recorded(bytes(changed)).ok(allow_skipped=True)


def _offsets(data: bytes) -> list[int]:
    length = parse_quote(data).length
    regions = REGIONS[parse_quote(data).version]
    chosen = set(range(0, length, 97))
    for start, end in regions.values():
        end = length if end is None else end
        chosen.update({start, (start + end) // 2, end - 1})
    return sorted(chosen)


@pytest.mark.parametrize("name", ALL)
def test_one_flipped_byte_anywhere_fails(name: str) -> None:
    data = load(name)
    assert verify_as_recorded(data).ok(allow_skipped=True)
    survivors = []
    for offset in _offsets(data):
        for mask in (0x01, 0x80):
            tampered = bytearray(data)
            tampered[offset] ^= mask
            if verify_as_recorded(bytes(tampered), original=data).ok(allow_skipped=True):
                survivors.append((offset, mask))
    assert survivors == []


@pytest.mark.parametrize("region", sorted(REGIONS[4]))
def test_flip_in_each_region_names_a_failing_check(region: str) -> None:
    data = load(TRUSTEE_TDX)
    start, end = REGIONS[4][region]
    tampered = bytearray(data)
    tampered[start + 5 if end is None else (start + end) // 2] ^= 0x01
    result = verify_as_recorded(bytes(tampered), original=data)
    assert result.failures(), region


def test_truncated_empty_and_unsupported_inputs_fail() -> None:
    data = load(PHALA_SGX)
    for bad in (b"", data[:40], data[:-1], b"\x05\x00" + data[2:]):
        result = verify_quote(bad, expected_report_data=None, now=NOW, allowlist=None)
        assert not result.ok(allow_skipped=True) and result.check("format").status == "fail"


def test_hardware_binding_against_known_report_data() -> None:
    data = load(TRUSTEE_TDX)
    assert verify_as_recorded(data, expected_report_data=TRUSTEE_REPORT_DATA).check("report_data").status == "pass"
    other_job = hashlib.sha512(b"another job").digest()
    result = verify_as_recorded(data, expected_report_data=other_job)
    check = result.check("report_data")
    assert check.status == "fail" and "made for something else" in check.detail
    assert verify_as_recorded(data, expected_report_data=TRUSTEE_REPORT_DATA[:32]).check("report_data").status == "fail"


def test_unknown_measurement_is_refused() -> None:
    data = load(GCP_TDX)
    known = parse_quote(data).body.measurements()
    other = {"tdx": [{"mrtd": "00" * 48}, {"mrtd": known["mrtd"], "rtmr0": "11" * 48}]}
    result = verify_as_recorded(data, allowlist={"measurements": other})
    assert result.check("allowlist").status == "fail"
    assert verify_as_recorded(data, allowlist={"measurements": {}}).check("allowlist").status == "fail"
    ok = verify_as_recorded(data, allowlist={"measurements": {"tdx": [{"mrtd": known["mrtd"].upper()}]}})
    assert ok.check("allowlist").status == "pass"


def test_malformed_allowlist_fails_closed() -> None:
    data = load(PHALA_SGX)
    assert verify_as_recorded(data, allowlist={"measurements": {"sgx": [{}]}}).check("allowlist").status == "fail"
    assert verify_as_recorded(data, allowlist={"measurements": {"sgx": [{"mrenklave": "00"}]}}).check(
        "allowlist").status == "fail"


def test_certificate_validity_uses_the_given_time() -> None:
    data = load(TRUSTEE_TDX)  # PCK leaf valid 2023-02-07 to 2030-02-07
    for when in (datetime(2031, 1, 1, tzinfo=UTC), datetime(2022, 1, 1, tzinfo=UTC)):
        result = verify_as_recorded(data, now=when)
        assert result.check("pck_validity").status == "fail"
    assert verify_as_recorded(data, now=datetime(2026, 1, 1)).check("time").status == "fail"  # naive time


class FixedCollateral:
    def __init__(self, status: str) -> None:
        self.status = status

    def evaluate(self, quote, chain, now):
        return CollateralResult(self.status, (("crl", True, "test provider"),))


def test_collateral_provider_decides_tcb_status() -> None:
    data = load(PHALA_SGX)
    result = verify_as_recorded(data, collateral=FixedCollateral("UpToDate"))
    assert result.ok() and result.tcb_status == "UpToDate"
    stale = verify_as_recorded(data, collateral=FixedCollateral("OutOfDate"))
    assert stale.check("tcb").status == "fail" and stale.tcb_status == "OutOfDate"


def _foreign_crl(issuer: x509.Name) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    crl = (x509.CertificateRevocationListBuilder().issuer_name(issuer)
           .last_update(NOW - timedelta(days=1)).next_update(NOW + timedelta(days=1))
           .sign(key, hashes.SHA256()))
    return crl.public_bytes(serialization.Encoding.PEM).decode("ascii")


def test_offline_bundle_refuses_crls_not_signed_by_the_chain() -> None:
    data = load(PHALA_SGX)
    quote = parse_quote(data)
    issuer = x509.load_pem_x509_certificates(quote.pck_chain_pem)[1].subject
    bundle = OfflineCollateral.from_json({"format": "rapha-dcap-collateral/v1", "crls": [_foreign_crl(issuer)]})
    result = verify_as_recorded(data, collateral=bundle)
    assert result.check("crl").status == "fail" and "no CRL signed by" in result.check("crl").detail
    assert result.check("tcb").status == "fail" and result.tcb_status.startswith("unknown")


def test_offline_bundle_format_is_checked() -> None:
    with pytest.raises(BadInput):
        OfflineCollateral.from_json(b'{"format": "something else"}')
    with pytest.raises(BadInput):
        OfflineCollateral.from_json({"format": "rapha-dcap-collateral/v1", "crls": ["zz"]})


def _runtime() -> RuntimeMeasurement:
    return RuntimeMeasurement("a" * 64, "b" * 64, hashlib.sha256(b"").hexdigest())


def test_software_quote_round_trip_is_bound_and_labelled_unsafe() -> None:
    edge = PrivateKey.generate()
    commitment = binding_commitment("0" * 32, "1" * 64, edge.key_id, _runtime())
    report_data = report_data_for(commitment)
    quote = make_software_quote(report_data, _runtime().to_dict(), edge)
    policy = {"measurements": {"unsafe_software": [{"edge_code_sha256": "a" * 64}]}}
    result = verify_quote(quote, expected_report_data=report_data, now=NOW, allowlist=policy, software_key=edge.public)
    assert result.ok(allow_skipped=True), result.failures()
    assert result.unsafe and result.kind == "unsafe_software" and result.debug is False
    assert "unsafe" in result.check("format").detail and "unsafe" in result.tcb_status
    other = report_data_for(binding_commitment("2" * 32, "1" * 64, edge.key_id, _runtime()))
    assert verify_quote(quote, expected_report_data=other, now=NOW, allowlist=policy,
                        software_key=edge.public).check("report_data").status == "fail"


def test_software_quote_needs_the_right_key_and_untampered_bytes() -> None:
    edge, stranger = PrivateKey.generate(), PrivateKey.generate()
    report_data = hashlib.sha512(b"job").digest()
    quote = make_software_quote(report_data, _runtime().to_dict(), edge)
    args = {"expected_report_data": report_data, "now": NOW, "allowlist": None}
    assert verify_quote(quote, **args, software_key=stranger.public).check("software_signature").status == "fail"
    assert verify_quote(quote, **args).check("software_signature").status == "fail"
    for offset in range(0, len(quote), 7):
        tampered = bytearray(quote)
        tampered[offset] ^= 0x01
        assert not verify_quote(bytes(tampered), **args, software_key=edge.public).ok(allow_skipped=True), offset


def test_binding_refuses_empty_fields_and_bad_digests() -> None:
    with pytest.raises(BadInput):
        binding_commitment("", "1" * 64, "k", _runtime())
    with pytest.raises(BadInput):
        RuntimeMeasurement("A" * 64, "b" * 64, "c" * 64)
    commitment = binding_commitment("0" * 32, "1" * 64, "k", _runtime())
    assert len(report_data_for(commitment)) == 64
    assert report_data_for(commitment) != report_data_for({**commitment, "job_nonce": "9" * 32})


def _level(sgx: list[int], pce: int, tdx: list[int] | None, status: str) -> dict:
    tcb: dict = {"sgxtcbcomponents": [{"svn": s} for s in sgx], "pcesvn": pce}
    if tdx is not None:
        tcb["tdxtcbcomponents"] = [{"svn": s} for s in tdx]
    return {"tcb": tcb, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": status}


def test_tcb_level_matching_takes_the_first_level_the_platform_reaches() -> None:
    from jupyter_rapha.protocol.attestation.collateral import _matching_level
    from jupyter_rapha.protocol.attestation.pck import parse_pck_chain
    from jupyter_rapha.protocol.attestation.sgx_extensions import platform_of

    quote = parse_quote(load(TRUSTEE_TDX))  # PCK: sgx svns 5,5,13,2,3,1,0,3 / pce 11; TEE_TCB_SVN 03 00 05
    platform = platform_of(parse_pck_chain(quote.pck_chain_pem).leaf)
    assert platform.fmspc == "50806f000000" and platform.pce_svn == 11
    rest = [0] * 8
    newer = _level([6, 6, 13, 2, 3, 1, 0, 3] + rest, 11, [3, 0, 5] + [0] * 13, "UpToDate")
    tdx_newer = _level([5, 5, 13, 2, 3, 1, 0, 3] + rest, 11, [3, 0, 6] + [0] * 13, "UpToDate")
    reached = _level([5, 5, 13, 2, 3, 1, 0, 3] + rest, 11, [3, 0, 5] + [0] * 13, "OutOfDate")
    assert _matching_level(quote, platform, [newer, tdx_newer, reached])["tcbStatus"] == "OutOfDate"
    assert _matching_level(quote, platform, [newer, tdx_newer]) is None
    assert _matching_level(quote, platform, [_level([0] * 16, 12, [0] * 16, "UpToDate")]) is None  # pcesvn


def test_tcb_info_signed_outside_the_intel_root_is_refused() -> None:
    import json as _json

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Intel SGX Root CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    body = _json.dumps({"tcbInfo": {"id": "SGX", "fmspc": "00a067110000"}, "signature": "00" * 64})
    bundle = OfflineCollateral.from_json({"format": "rapha-dcap-collateral/v1", "crls": [],
                                          "tcb_info": [{"body": body, "issuer_chain": pem + pem}]})
    result = verify_as_recorded(load(PHALA_SGX), collateral=bundle)
    assert result.check("tcb").status == "fail" and "not the embedded Intel SGX Root CA" in result.check("tcb").detail
