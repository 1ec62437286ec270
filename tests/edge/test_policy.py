"""The policy gate: the default policies on real inputs through regopy, one allow and
one deny per rule, and every injected fault denying with its reason (S4)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("torch"):  # torch must load before regopy in one process
    import torch  # noqa: F401

from edge_kernel.data.registry import Dataset, FieldSpec
from edge_kernel.gates.pipeline import GateContext, GateResult, run_gates
from edge_kernel.gates.policy import PolicyGate, build_policy_input, load_bundle
from edge_kernel.gates.scan import ScanGate
from edge_kernel.researchers import Researcher
from edge_kernel.settings import Settings
from jupyter_rapha.protocol.jobspec import Budget, JobSpec, OutputPolicy, code_digest
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.policy import PolicyBundle, evaluate

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
CELL = "import torch\nmodel = torch.nn.Linear(4, 2)\n"


def make_ctx(tmp_path: Path, *, code: str = CELL, demo: bool = False, cohort: int | None = 40,
             fields: tuple[str, ...] = ("image", "finding"), roles: tuple[str, ...] = ("researcher",),
             max_records: int = 100, epochs: int = 3, metric_names: tuple[str, ...] = ("loss",),
             airgap: bool = True, attestation: str | None = "tdx") -> GateContext:
    key = PrivateKey.generate()
    researcher = Researcher("alice", key.public.to_text(), roles, ("research",))
    spec = JobSpec(job_id="a" * 32, researcher_key_id=researcher.key_id, created="2026-01-31T12:00:00Z",
                   nonce="b" * 32, code=code, code_sha256=code_digest(code), dataset="synthetic-cxr",
                   fields=fields, budget=Budget(max_records, 600),
                   output_policy=OutputPolicy(1_000_000, metric_names, 1000), params={"epochs": epochs})
    dataset = Dataset("synthetic-cxr", "1", "dicom-folder", "data", {
        "image": FieldSpec("float32", (1, 32, 32)), "finding": FieldSpec("int64", (), "label")},
        price_per_record="0.01", sensitivity="synthetic", max_records=1000)
    settings = Settings(config_dir=tmp_path, edge_id="edge-test", demo=demo)
    ctx = GateContext(spec, "c" * 64, researcher, dataset, settings)
    if cohort is not None:
        ctx.extra["cohort_size"] = cohort
    if attestation:
        outcome = "unsafe" if attestation == "unsafe_software" else "pass"
        ctx.results["attestation"] = GateResult("attestation", outcome, {
            "backend": attestation, "outcome": outcome, "report_data_binding": "ok"})
    if airgap:
        ctx.results["airgap"] = GateResult("airgap", "pass", {"sealed": True})
    return ctx


def run_policy(ctx: GateContext, gate: PolicyGate | None = None) -> GateResult:
    ctx.results["scan"] = ScanGate().check(ctx)
    return (gate or PolicyGate(POLICY_DIR)).check(ctx)


def assert_denied(result: GateResult, text: str) -> None:
    assert result.outcome == "deny", result
    assert any(text in reason for reason in result.reasons), result.reasons


def test_good_job_allowed_with_obligations_and_bundle_digest(tmp_path):
    gate = PolicyGate(POLICY_DIR)
    result = run_policy(make_ctx(tmp_path), gate)
    assert result.outcome == "pass", result.reasons
    assert result.obligations == {"max_epochs": 100, "max_seconds": 600, "dp_required": False,
                                  "holdback": {"fraction": 0.1, "minimum": 50}}
    assert result.evidence["bundle_sha256"] == gate.bundle.digest == load_bundle(POLICY_DIR).digest
    assert result.evidence["decision"]["allow"] is True


def test_policy_input_leaves_out_the_code_and_carries_every_part(tmp_path):
    ctx = make_ctx(tmp_path, cohort=31)
    ctx.results["scan"] = ScanGate().check(ctx)
    doc = build_policy_input(ctx)
    assert set(doc) == {"job", "scan", "attestation", "airgap", "dataset", "researcher", "edge"}
    assert "code" not in doc["job"] and doc["job"]["code_sha256"] == code_digest(CELL)
    assert doc["dataset"] == {"name": "synthetic-cxr", "fields": ["finding", "image"], "sensitivity": "synthetic",
                              "cohort_size": 31, "max_records": 1000, "price": "0.01"}
    assert doc["researcher"]["roles"] == ["researcher"] and doc["edge"] == {"demo": False, "unsafe": []}
    assert doc["scan"]["scanner_version"].startswith("rapha-scan/")


def test_denying_gate_evidence_is_not_passed_to_the_policy(tmp_path):
    ctx = make_ctx(tmp_path)
    ctx.results["attestation"] = GateResult("attestation", "deny", {"backend": "tdx", "outcome": "pass"})
    assert build_policy_input(ctx)["attestation"] is None


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"roles": ("auditor",)}, "no role granted access"),
    ({"fields": ("image", "name")}, "field 'name'"),
    ({"airgap": False}, "no air-gap evidence"),
    ({"cohort": 24}, "only 24 consented records"),
    ({"cohort": None}, "consented cohort size"),
    ({"attestation": None}, "no verified attestation"),
    ({"attestation": "unsafe_software"}, "'unsafe_software' is not accepted"),
    ({"max_records": 1001}, "exceeds this dataset's limit"),
    ({"epochs": 101}, "101 epochs requested"),
    ({"code": "import pandas\n"}, "cell line 1: module pandas"),
])
def test_each_rule_denies(tmp_path, kwargs, reason):
    assert_denied(run_policy(make_ctx(tmp_path, **kwargs)), reason)


@pytest.mark.parametrize("kwargs", [
    {"roles": ("researcher", "auditor")}, {"fields": ("image",)}, {"cohort": 25}, {"max_records": 1000},
    {"epochs": 100}, {"attestation": "sgx"}, {"attestation": "unsafe_software", "demo": True},
])
def test_each_rule_allows_its_boundary(tmp_path, kwargs):
    result = run_policy(make_ctx(tmp_path, **kwargs))
    assert result.outcome == "pass", result.reasons


def test_no_airgap_waived_only_on_demo_with_unsafe_flag(tmp_path):
    ctx = make_ctx(tmp_path, airgap=False, demo=True)
    object.__setattr__(ctx.settings, "unsafe", ("unsafe_no_airgap",))
    assert run_policy(ctx).outcome == "pass"
    ctx = make_ctx(tmp_path, airgap=False, demo=False)
    object.__setattr__(ctx.settings, "unsafe", ("unsafe_no_airgap",))
    assert_denied(run_policy(ctx), "no air-gap evidence")


def test_high_scan_finding_denies_in_policy_too(tmp_path):
    ctx = make_ctx(tmp_path, code="import socket\n")
    ctx.results["scan"] = GateResult("scan", "pass", ScanGate().check(ctx).evidence)
    assert_denied(PolicyGate(POLICY_DIR).check(ctx), "imports network module socket")


def test_pipeline_scan_then_policy(tmp_path):
    ctx = make_ctx(tmp_path, code="import os\nos.system('id')\n")
    outcome = run_gates([ScanGate(), PolicyGate(POLICY_DIR)], ctx)
    assert not outcome.allowed and [r.name for r in outcome.results] == ["scan"]
    assert "cell line 2" in outcome.reasons[0]


# -- fault injection: each fault denies with its reason ---------------------------------

def copy_policies(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, target)
    return target


def test_policy_syntax_error_denies_with_file_and_line(tmp_path):
    target = copy_policies(tmp_path)
    (target / "broken.rego").write_text("package rapha\n\nimport rego.v1\n\ndeny contains x if { x := }\n")
    assert_denied(run_policy(make_ctx(tmp_path), PolicyGate(target)), "broken.rego line 5")


def test_bad_data_json_denies(tmp_path):
    target = copy_policies(tmp_path)
    (target / "data.json").write_text("{not json")
    assert_denied(run_policy(make_ctx(tmp_path), PolicyGate(target)), "policy data is not valid JSON")


def test_missing_directory_denies(tmp_path):
    assert_denied(run_policy(make_ctx(tmp_path), PolicyGate(tmp_path / "nowhere")), "does not exist")


def test_empty_directory_denies(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "only_test.rego").write_text("package t\n")
    assert_denied(run_policy(make_ctx(tmp_path), PolicyGate(tmp_path / "empty")), "holds no .rego policies")


@pytest.mark.parametrize(("body", "reason"), [
    ('decision := {"allow": "yes", "deny": [], "obligations": {}}', "not a boolean"),
    ('decision := {"deny": [], "obligations": {}}', "not a boolean"),
    ('decision := {"allow": true, "deny": "none", "obligations": {}}', "not a list of strings"),
    ('decision := {"allow": true, "deny": [], "obligations": []}', "'obligations' is not an object"),
    ('decision := [true]', "not an object"),
    ('decision := {"allow": true, "deny": [], "obligations": {}} if { input.nothing }', "undefined"),
    ('decision := {"allow": true, "deny": ["no"], "obligations": {}}', "no"),
])
def test_malformed_decisions_deny(tmp_path, body, reason):
    bundle = PolicyBundle.from_texts({"p.rego": f"package rapha\n\nimport rego.v1\n\n{body}\n"})
    decision = evaluate(bundle, {"job": {}})
    assert not decision.allowed and any(reason in r for r in decision.deny), decision


def test_undefined_package_denies(tmp_path):
    gate = PolicyGate(copy_policies(tmp_path))
    gate.bundle = PolicyBundle.from_texts({"p.rego": "package elsewhere\n\nallow := true\n"})
    assert_denied(run_policy(make_ctx(tmp_path), gate), "data.rapha.decision is undefined")


def test_engine_missing_denies(tmp_path):
    def missing_engine() -> Any:
        raise ImportError("No module named 'regopy'")

    assert_denied(run_policy(make_ctx(tmp_path), PolicyGate(POLICY_DIR, engine=missing_engine)),
                  "policy engine unavailable (ImportError)")


def test_timeout_denies_and_returns_on_time(tmp_path):
    target = copy_policies(tmp_path)
    (target / "slow.rego").write_text(
        "package rapha\n\nimport rego.v1\n\n"
        "deny contains \"slow\" if { count([x | some x in numbers.range(1, 4000000)]) < 0 }\n")
    started = time.monotonic()
    result = run_policy(make_ctx(tmp_path), PolicyGate(target, timeout_s=0.3))
    assert time.monotonic() - started < 5
    assert_denied(result, "did not finish within 0.3 s of CPU time")


def _waiting_engine(load_seconds: float = 0.0, query_seconds: float = 0.0) -> Any:
    """The real engine, behind a start-up and a query that wait (wall time, no CPU), as
    a process importing torch or a machine whose cores are busy elsewhere would."""
    from jupyter_rapha.protocol.policy import load_engine

    def engine() -> Any:
        time.sleep(load_seconds)
        make = load_engine()

        def interpreter() -> Any:
            rego = make()
            query = rego.query

            def slow_query(text: str) -> Any:
                time.sleep(query_seconds)
                return query(text)
            rego.query = slow_query
            return rego
        return interpreter
    return engine


def test_engine_start_up_is_not_counted_against_the_limit(tmp_path):
    # A notebook's first dry run loads torch and regopy inside the evaluation; that is
    # not the policy being slow, and used to refuse honest cells under a 2 s wall clock.
    gate = PolicyGate(POLICY_DIR, timeout_s=0.3, engine=_waiting_engine(load_seconds=0.8))
    assert run_policy(make_ctx(tmp_path), gate).outcome == "pass"


def test_waiting_is_not_computing_but_the_wall_clock_backstop_still_denies(tmp_path):
    bundle = load_bundle(POLICY_DIR)
    ctx = make_ctx(tmp_path)
    ctx.results["scan"] = ScanGate().check(ctx)
    doc = build_policy_input(ctx)
    waited = evaluate(bundle, doc, timeout_s=0.3, engine=_waiting_engine(query_seconds=0.8))
    assert waited.allowed, waited
    started = time.monotonic()
    stuck = evaluate(bundle, doc, timeout_s=0.3, wall_timeout_s=0.5, engine=_waiting_engine(query_seconds=30))
    assert time.monotonic() - started < 5
    assert not stuck.allowed and stuck.fault == "policy evaluation did not finish within 0.5 s"


def test_engine_exception_during_query_denies(tmp_path):
    class Exploding:
        def add_module(self, name: str, text: str) -> None:
            pass

        def add_data_json(self, text: str) -> None:
            pass

        def set_input_term(self, text: str) -> None:
            raise RuntimeError("engine fault")

    assert_denied(run_policy(make_ctx(tmp_path), PolicyGate(POLICY_DIR, engine=lambda: Exploding)),
                  "policy evaluation failed")


def test_rules_are_fixed_at_construction(tmp_path):
    target = copy_policies(tmp_path)
    gate = PolicyGate(target)
    digest = gate.bundle.digest
    (target / "deny_all.rego").write_text('package rapha\n\nimport rego.v1\n\ndeny contains "changed"\n')
    result = run_policy(make_ctx(tmp_path), gate)
    assert result.outcome == "pass" and result.evidence["bundle_sha256"] == digest
    assert PolicyGate(target).bundle.digest != digest


def _edit_grants(target: Path, text: str) -> None:
    path = target / "data.json"
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))  # a later edit, even on a coarse clock


def test_data_json_edit_takes_effect_at_the_next_job(tmp_path):
    target = copy_policies(tmp_path)
    gate = PolicyGate(target)
    assert run_policy(make_ctx(tmp_path), gate).outcome == "pass"
    data = json.loads((target / "data.json").read_text())
    del data["hospital"]["datasets"]["synthetic-cxr"]  # the grant is withdrawn
    _edit_grants(target, json.dumps(data))
    assert_denied(run_policy(make_ctx(tmp_path), gate), "is not released for training")
    assert gate.bundle.digest == load_bundle(target).digest  # the receipt names the reloaded policy


@pytest.mark.parametrize("broken", ["{not json", "[]", ""])
def test_broken_data_json_edit_keeps_the_previous_policy(tmp_path, caplog, broken):
    target = copy_policies(tmp_path)
    gate = PolicyGate(target)
    digest = gate.bundle.digest
    data = json.loads((target / "data.json").read_text())
    data["hospital"]["datasets"]["synthetic-cxr"]["roles"] = []  # a stricter policy, in force
    _edit_grants(target, json.dumps(data))
    assert_denied(run_policy(make_ctx(tmp_path), gate), "has no role granted access")
    stricter = gate.bundle.digest
    assert stricter != digest
    _edit_grants(target, broken)
    with caplog.at_level(logging.ERROR, logger="edge_kernel.gates.policy"):
        result = run_policy(make_ctx(tmp_path), gate)
    assert_denied(result, "has no role granted access")  # neither open nor the old, wider grant
    assert result.evidence["bundle_sha256"] == stricter
    assert "the previous policy stays in force" in caplog.text


def test_bundle_digest_covers_every_file_and_ignores_tests(tmp_path):
    target = copy_policies(tmp_path)
    base = load_bundle(target).digest
    (target / "extra_test.rego").write_text("package rapha_test\n")
    assert load_bundle(target).digest == base
    (target / "data.json").write_text((target / "data.json").read_text() + " ")
    assert load_bundle(target).digest != base


def test_scan_gate_crash_denies_through_the_pipeline(tmp_path):
    class Crashing(ScanGate):
        def check(self, ctx: GateContext) -> GateResult:
            raise RecursionError("deep")

    outcome = run_gates([Crashing(), PolicyGate(POLICY_DIR)], make_ctx(tmp_path))
    assert not outcome.allowed and "gate scan failed: RecursionError" in outcome.reasons[0]
