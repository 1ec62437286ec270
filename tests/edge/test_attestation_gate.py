"""Attestation backends against fake configfs-tsm and Gramine trees returning recorded
real quotes, the software stand-in end to end, and the gate's decisions."""

from __future__ import annotations

import base64
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_kernel.attestation import (
    AttestationFault, SgxGramineBackend, TdxBackend, UnsafeSoftwareBackend,
    load_attestation_policy, load_collateral_bundle, runtime_measurement, select_backend,
)
from edge_kernel.gates.attestation import AttestationGate
from edge_kernel.gates.pipeline import GateContext, run_gates
from edge_kernel.settings import Settings
from jupyter_rapha.protocol.attestation import parse_quote, report_data_for, verify_quote
from jupyter_rapha.protocol.errors import AttestationDenied, BadInput
from jupyter_rapha.protocol.jobspec import Budget, JobSpec, code_digest
from jupyter_rapha.protocol.keys import PrivateKey

DATA = Path(__file__).resolve().parents[1] / "data" / "attestation"
NOW = datetime(2026, 11, 27, tzinfo=UTC)
GCP_TDX = DATA / "tdx_v4_go-tdx-guest_gcp_cos113_padded.dat"
TRUSTEE_TDX = DATA / "tdx_v4_trustee_debug_td.dat"
PHALA_SGX = DATA / "sgx_v3_phala_dcap-qvl.dat"
NO_TEE = ("no TEE found: {tsm} absent and {gramine} absent; the software backend is allowed only in demo mode")


def make_ctx(tmp_path: Path, *, demo: bool, nonce: str = "ab" * 16, edge_key_id: str | None = None) -> GateContext:
    code = "print(1)\n"
    spec = JobSpec(job_id="cd" * 16, researcher_key_id="ef" * 16, created="2026-11-27T00:00:00Z", nonce=nonce,
                   code=code, code_sha256=code_digest(code), dataset="demo", fields=("pixels",),
                   budget=Budget(max_records=10))
    settings = Settings(config_dir=tmp_path / "edge", edge_id="test-edge", demo=demo)
    extra = {"edge_key_id": edge_key_id} if edge_key_id else {}
    return GateContext(spec, "12" * 32, researcher=None, dataset=None, settings=settings, extra=extra)


def fake_tsm(tmp_path: Path, quote: bytes, provider: str = "tdx_guest", generation: str = "1"):
    """A configfs-tsm tree: mkdir creates the attribute files the kernel would."""
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)

    def kernel_mkdir(entry: Path) -> None:
        entry.mkdir()
        (entry / "provider").write_text(provider + "\n")
        (entry / "generation").write_text(generation + "\n")
        (entry / "outblob").write_bytes(quote)

    return root, kernel_mkdir, shutil.rmtree


def fake_gramine(tmp_path: Path, quote: bytes, kind: str = "dcap") -> Path:
    root = tmp_path / "dev" / "attestation"
    root.mkdir(parents=True)
    (root / "attestation_type").write_text(kind)
    (root / "user_report_data").write_bytes(b"\0" * 64)
    (root / "quote").write_bytes(quote)
    return root


def test_no_tee_and_no_demo_is_a_clear_denial(tmp_path: Path) -> None:
    tsm, gramine = tmp_path / "no-tsm", tmp_path / "no-attestation"
    gate = AttestationGate(edge_key=PrivateKey.generate(), tsm_root=tsm, gramine_root=gramine)
    outcome = run_gates([gate], make_ctx(tmp_path, demo=False))
    assert not outcome.allowed
    assert outcome.results[0].reasons == (NO_TEE.format(tsm=tsm, gramine=gramine),)
    assert outcome.results[0].evidence["backend"] == "none"


def test_default_paths_are_named_in_the_denial() -> None:
    with pytest.raises(AttestationDenied) as denied:
        select_backend("auto", demo=False, edge_key=None, tsm_root=Path("/sys/kernel/config/tsm/report"),
                       gramine_root=Path("/nonexistent/attestation"))
    if not Path("/sys/kernel/config/tsm/report").exists():
        assert "/sys/kernel/config/tsm/report absent" in denied.value.diagnostics()


def test_software_backend_refused_outside_demo_even_if_configured(tmp_path: Path) -> None:
    gate = AttestationGate(backend="unsafe_software", edge_key=PrivateKey.generate(),
                           tsm_root=tmp_path / "x", gramine_root=tmp_path / "y")
    result = gate.check(make_ctx(tmp_path, demo=False))
    assert result.outcome == "deny" and "only in demo mode" in result.reasons[0]
    injected = AttestationGate(backend=UnsafeSoftwareBackend(PrivateKey.generate()))
    assert injected.check(make_ctx(tmp_path, demo=False)).outcome == "deny"


def test_configured_tee_that_is_absent_denies(tmp_path: Path) -> None:
    for choice in ("tdx", "sgx"):
        gate = AttestationGate(backend=choice, tsm_root=tmp_path / "x", gramine_root=tmp_path / "y")
        result = gate.check(make_ctx(tmp_path, demo=True))
        assert result.outcome == "deny" and f"backend {choice} is configured" in result.reasons[0]
    assert AttestationGate(backend="bogus").check(make_ctx(tmp_path, demo=True)).outcome == "deny"


def test_software_backend_round_trips_and_is_labelled_unsafe(tmp_path: Path, caplog) -> None:
    edge = PrivateKey.generate()
    gate = AttestationGate(edge_key=edge, tsm_root=tmp_path / "x", gramine_root=tmp_path / "y", clock=lambda: NOW)
    with pytest.warns(RuntimeWarning, match="unsafe"), caplog.at_level(logging.WARNING):
        outcome = run_gates([gate], make_ctx(tmp_path, demo=True, edge_key_id=edge.key_id))
    result = outcome.results[0]
    assert outcome.allowed and result.outcome == "unsafe"
    assert "unsafe" in caplog.text
    evidence = result.evidence
    assert evidence["backend"] == "unsafe_software" and evidence["unsafe"]
    assert evidence["report_data_binding"] == "ok" and evidence["debug"] is False
    commitment = evidence["commitment"]
    assert commitment["job_nonce"] == "ab" * 16 and commitment["request_sha256"] == "12" * 32
    assert commitment["edge_key_id"] == edge.key_id
    # A reviewer re-checks the quote from the evidence with the edge's public key alone.
    quote = base64.b64decode(evidence["quote"])
    again = verify_quote(quote, expected_report_data=report_data_for(commitment), now=NOW, allowlist=None,
                         software_key=edge.public)
    assert again.ok(allow_skipped=True) and again.unsafe
    assert verify_quote(quote, expected_report_data=report_data_for(commitment), now=NOW, allowlist=None,
                        software_key=PrivateKey.generate().public).check("software_signature").status == "fail"


class ReplayBackend:
    """A compromised edge replaying a quote made for an earlier job."""

    name = "unsafe_software"

    def __init__(self, quote: bytes) -> None:
        self.recorded = quote

    def quote(self, report_data: bytes, measurements: dict[str, str]) -> bytes:
        return self.recorded


def test_quote_made_for_another_job_is_refused(tmp_path: Path) -> None:
    edge = PrivateKey.generate()
    first = AttestationGate(edge_key=edge, tsm_root=tmp_path / "x", gramine_root=tmp_path / "y", clock=lambda: NOW)
    with pytest.warns(RuntimeWarning):
        old = first.check(make_ctx(tmp_path, demo=True, nonce="01" * 16))
    replay = AttestationGate(backend=ReplayBackend(base64.b64decode(old.evidence["quote"])), edge_key=edge,
                             clock=lambda: NOW)
    result = replay.check(make_ctx(tmp_path, demo=True, nonce="02" * 16))
    assert result.outcome == "deny" and result.evidence["report_data_binding"] == "mismatch"
    assert any(reason.startswith("report_data:") for reason in result.reasons)


def test_edge_key_id_mismatch_denies(tmp_path: Path) -> None:
    gate = AttestationGate(edge_key=PrivateKey.generate(), tsm_root=tmp_path / "x", gramine_root=tmp_path / "y")
    result = gate.check(make_ctx(tmp_path, demo=True, edge_key_id="00" * 16))
    assert result.outcome == "deny" and "edge key id" in result.reasons[0]


def test_tdx_backend_speaks_configfs_tsm(tmp_path: Path) -> None:
    recorded = GCP_TDX.read_bytes()
    root, mkdir, rmdir = fake_tsm(tmp_path, recorded)
    seen: list[bytes] = []

    def removing(entry: Path) -> None:
        seen.append((entry / "inblob").read_bytes())
        rmdir(entry)

    backend = TdxBackend(root, mkdir=mkdir, rmdir=removing)
    assert backend.quote(b"\x07" * 64, {}) == recorded  # the whole buffer, padding included
    assert seen == [b"\x07" * 64] and list(root.iterdir()) == []
    with pytest.raises(AttestationFault):
        backend.quote(b"short", {})


@pytest.mark.parametrize("provider,generation", [("sev_guest", "1"), ("tdx_guest", "2")])
def test_tdx_backend_refuses_wrong_provider_or_raced_entry(tmp_path: Path, provider: str, generation: str) -> None:
    root, mkdir, rmdir = fake_tsm(tmp_path, GCP_TDX.read_bytes(), provider, generation)
    with pytest.raises(AttestationFault):
        TdxBackend(root, mkdir=mkdir, rmdir=rmdir).quote(b"\0" * 64, {})


def test_sgx_backend_speaks_gramine(tmp_path: Path) -> None:
    root = fake_gramine(tmp_path, PHALA_SGX.read_bytes())
    assert SgxGramineBackend(root).quote(b"\x09" * 64, {}) == PHALA_SGX.read_bytes()
    assert (root / "user_report_data").read_bytes() == b"\x09" * 64
    with pytest.raises(AttestationFault):
        SgxGramineBackend(fake_gramine(tmp_path / "epid", b"q", kind="epid")).quote(b"\0" * 64, {})
    (root / "quote").write_bytes(b"")
    with pytest.raises(AttestationFault):
        SgxGramineBackend(root).quote(b"\0" * 64, {})


def test_detection_prefers_tdx_then_sgx(tmp_path: Path) -> None:
    tsm, _, _ = fake_tsm(tmp_path, b"q")
    gramine = fake_gramine(tmp_path, b"q")
    assert select_backend("auto", demo=False, edge_key=None, tsm_root=tsm, gramine_root=gramine).name == "tdx"
    assert select_backend("auto", demo=False, edge_key=None, tsm_root=tmp_path / "none",
                          gramine_root=gramine).name == "sgx"
    assert select_backend("auto", demo=True, edge_key=PrivateKey.generate(), tsm_root=tmp_path / "none",
                          gramine_root=tmp_path / "none").name == "unsafe_software"


def _policy_for(path: Path, **extra) -> dict:
    quote = parse_quote(path.read_bytes())
    return {"measurements": {quote.tee: [quote.body.measurements()]}, **extra}


def test_real_tdx_quote_through_the_gate_is_refused_for_binding(tmp_path: Path) -> None:
    root, mkdir, rmdir = fake_tsm(tmp_path, GCP_TDX.read_bytes())
    gate = AttestationGate(backend=TdxBackend(root, mkdir=mkdir, rmdir=rmdir), edge_key=PrivateKey.generate(),
                           policy_data=_policy_for(GCP_TDX), clock=lambda: NOW)
    result = gate.check(make_ctx(tmp_path, demo=False))
    evidence = result.evidence
    assert result.outcome == "deny" and evidence["backend"] == "tdx"
    # The recorded quote is genuine: every signature and the chain pass; only the binding fails.
    failed = {c["name"] for c in evidence["checks"] if c["status"] == "fail"}
    assert failed == {"report_data"} and evidence["report_data_binding"] == "mismatch"
    assert evidence["tcb_status"] == "unknown (no collateral)" and evidence["debug"] is False
    assert evidence["quote_sha256"] == __import__("hashlib").sha256(GCP_TDX.read_bytes()[:4935]).hexdigest()


def test_debug_td_is_refused_by_default_policy(tmp_path: Path) -> None:
    root, mkdir, rmdir = fake_tsm(tmp_path, TRUSTEE_TDX.read_bytes())
    gate = AttestationGate(backend=TdxBackend(root, mkdir=mkdir, rmdir=rmdir), policy_data=_policy_for(TRUSTEE_TDX),
                           edge_key=PrivateKey.generate(), clock=lambda: NOW)
    result = gate.check(make_ctx(tmp_path, demo=False))
    assert result.outcome == "deny" and result.evidence["debug"] is True
    assert any(reason.startswith("debug:") for reason in result.reasons)


def test_unknown_measurement_is_refused_by_the_gate(tmp_path: Path) -> None:
    root = fake_gramine(tmp_path, PHALA_SGX.read_bytes())
    for policy in (None, {"measurements": {"sgx": [{"mrenclave": "00" * 32}]}}):
        gate = AttestationGate(backend=SgxGramineBackend(root), policy_data=policy,
                               edge_key=PrivateKey.generate(), clock=lambda: NOW)
        result = gate.check(make_ctx(tmp_path, demo=False))
        assert result.outcome == "deny" and any(reason.startswith("allowlist:") for reason in result.reasons)


def test_runtime_measurement_follows_policies_and_airgap(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "job.rego").write_text("package rapha\n")
    binary = tmp_path / "rapha-airgap"
    binary.write_bytes(b"\x7fELF")
    first = runtime_measurement(policies, binary)
    assert first == runtime_measurement(policies, binary)
    (policies / "job.rego").write_text("package rapha\ndefault allow := false\n")
    changed = runtime_measurement(policies, binary)
    assert changed.policy_bundle_sha256 != first.policy_bundle_sha256
    assert changed.edge_code_sha256 == first.edge_code_sha256
    assert runtime_measurement(policies, None).airgap_binary_sha256 != first.airgap_binary_sha256


def test_bundle_and_policy_files(tmp_path: Path) -> None:
    assert load_collateral_bundle(None) is None and load_attestation_policy(None) is None
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    for loader in (load_collateral_bundle, load_attestation_policy):
        with pytest.raises(BadInput):
            loader(bad)
        with pytest.raises(BadInput):
            loader(tmp_path / "missing.json")
    good = tmp_path / "bundle.json"
    good.write_text('{"format": "rapha-dcap-collateral/v1", "crls": [], "tcb_info": []}')
    assert load_collateral_bundle(good) is not None
