"""The release decision through the real engine and the shipped policy, and every way
the policy's answer can be unusable: each refuses (S4)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

if importlib.util.find_spec("torch"):  # torch must load before regopy in one process
    import torch  # noqa: F401

from edge_kernel.gates.policy import load_bundle
from edge_kernel.release.policy import POLICY_FAULT, ReleasePolicy, parse_release_decision
from jupyter_rapha.protocol.policy import PolicyBundle

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
CLEAN = {"holdback_size": 50, "checks": {
    "record_copies": {"records_scanned": 48, "numbers_scanned": 5000, "records_matched": 0,
                      "max_correlation": 0.2, "seconds": 0.1},
    "membership": {"status": "checked", "auc": 0.52, "tpr_at_1pct_fpr": 0.02, "records_used": 48,
                   "holdback_size": 50, "attack": "loss_threshold"},
    "capacity": {"parameters": 1000, "records_used": 48, "parameters_per_record": 20.8}}}


def shipped() -> ReleasePolicy:
    bundle = load_bundle(POLICY_DIR)
    return ReleasePolicy(lambda: bundle)


def copied(records_matched: int) -> dict:
    return {**CLEAN, "checks": {**CLEAN["checks"], "record_copies": {
        **CLEAN["checks"]["record_copies"], "records_matched": records_matched, "max_correlation": 1.0}}}


def test_the_demo_dataset_releases_clean_checks_at_once_and_names_the_bundle():
    decision = shipped().decide("synthetic-cxr", CLEAN)
    assert decision["decision"] == "release" and decision["mode"] == "auto"
    assert decision["rule"] == "checks_under_thresholds"
    assert decision["bundle_sha256"] == load_bundle(POLICY_DIR).digest


def test_a_record_copy_refuses_with_a_reason_the_researcher_can_read():
    decision = shipped().decide("synthetic-cxr", copied(48))
    assert decision["decision"] == "refuse" and decision["rule"] == "record_copies"
    assert decision["reasons"] == ["48 of the records the job used were found copied in its outputs"]


def test_a_dataset_the_policy_does_not_list_waits_for_an_output_checker():
    decision = shipped().decide("some-other-dataset", CLEAN)
    assert decision["decision"] == "review" and decision["approvals_needed"] == 1


@pytest.mark.parametrize("release_rego", [
    "package rapha.release\nimport rego.v1\n",  # no decision: undefined
    'package rapha.release\nimport rego.v1\ndecision := "release"\n',
    'package rapha.release\nimport rego.v1\ndecision := {"decision": true, "rule": "r", "reasons": [], '
    '"mode": "auto", "approvals_needed": 0}\n',
    'package rapha.release\nimport rego.v1\ndecision := {"decision": "release", "reasons": [], "mode": "auto", '
    '"approvals_needed": 0}\n',
    'package rapha.release\nimport rego.v1\ndecision := {"decision": "release", "rule": "r", "reasons": [], '
    '"mode": "auto", "approvals_needed": 1 / 0}\n',  # an error in the rule
    'package rapha.release\nimport rego.v1\ndecision := {"decision": "release", "rule": "r", "reasons": [], '
    '"mode": "auto" "approvals_needed": 0}\n',  # does not compile
])
def test_an_unusable_release_decision_refuses(release_rego):
    bundle = PolicyBundle.from_texts({"release.rego": release_rego}, "{}")
    decision = ReleasePolicy(lambda: bundle).decide("synthetic-cxr", CLEAN)
    assert decision["decision"] == "refuse" and decision["rule"] == "policy_fault"
    assert decision["reasons"] == [POLICY_FAULT]


def test_no_bundle_refuses():
    assert ReleasePolicy(lambda: None).decide("synthetic-cxr", CLEAN)["decision"] == "refuse"


def test_a_policy_that_runs_past_its_time_limit_refuses():
    slow = ('package rapha.release\nimport rego.v1\nn := count([x | some x in numbers.range(1, 30000000)])\n'
            'decision := {"decision": "release", "rule": "r", "reasons": [], "mode": "auto", '
            '"approvals_needed": 0} if n > 0\n')
    bundle = PolicyBundle.from_texts({"release.rego": slow}, "{}")
    decision = ReleasePolicy(lambda: bundle, timeout_s=0.2).decide("synthetic-cxr", CLEAN)
    assert decision["decision"] == "refuse" and decision["rule"] == "policy_fault"
    assert "CPU time" in decision["fault"]  # edge-side only: the researcher reads POLICY_FAULT


@pytest.mark.parametrize("raw", [
    None, [], {"decision": "release"},
    {"decision": "maybe", "rule": "r", "reasons": [], "mode": "auto", "approvals_needed": 0},
    {"decision": "release", "rule": "", "reasons": [], "mode": "auto", "approvals_needed": 0},
    {"decision": "release", "rule": "r", "reasons": "none", "mode": "auto", "approvals_needed": 0},
    {"decision": "release", "rule": "r", "reasons": [], "mode": "often", "approvals_needed": 0},
    {"decision": "release", "rule": "r", "reasons": [], "mode": "auto", "approvals_needed": True},
    {"decision": "review", "rule": "r", "reasons": [], "mode": "review", "approvals_needed": 0},
    {"decision": "review", "rule": "r", "reasons": [], "mode": "review", "approvals_needed": 3},
])
def test_parse_refuses_anything_but_the_exact_shape(raw):
    assert parse_release_decision(raw)["decision"] == "refuse"


def test_the_demo_dataset_releases_an_unchecked_model_naming_the_rule_but_others_wait_for_review():
    unchecked = {**CLEAN, "checks": {**CLEAN["checks"], "membership": {
        "status": "not_checkable", "auc": None, "tpr_at_1pct_fpr": None, "records_used": 48, "holdback_size": 0,
        "attack": "loss_threshold"}}}
    demo = shipped().decide("synthetic-cxr", unchecked)
    assert demo["decision"] == "release" and demo["rule"] == "membership_not_checkable_allowed"
    assert demo["reasons"] == ["the model could not be checked for membership inference; "
                               "the policy releases it unchecked"]
    assert shipped().decide("a-real-dataset", unchecked)["decision"] == "review"
