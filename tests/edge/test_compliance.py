"""The compliance map: 34 controls as data, each naming files and tests that exist, and
``rapha-edge compliance`` checking them against an edge's settings, so that weakening a
setting flips its control to "not met"."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edge_kernel.cli import main as edge_cli
from edge_kernel.data.synth import make_synthetic_dataset
from edge_kernel.compliance import CHECKS, MAP_FILE, MET, NOT_APPLICABLE, NOT_MET, evaluate, load_map
from edge_kernel.settings import load_settings
from tests.edge.test_tls import self_signed

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = {"UK GDPR", "NHS DSPT", "Caldicott", "HIPAA"}


@pytest.fixture
def edge_dir(tmp_path: Path) -> Path:
    """A production edge (no demo) whose every control the settings can meet, is met."""
    root = tmp_path / "edge"
    assert edge_cli(["init", str(root)]) == 0
    cert, key = self_signed(tmp_path)
    toml = (root / "edge.toml").read_text()
    toml = toml.replace('tls_cert = ""', f'tls_cert = "{cert}"').replace('tls_key = ""', f'tls_key = "{key}"')
    toml = toml.replace('backend = "embedded"', 'backend = "rpc"').replace('rpc_url = ""', 'rpc_url = "http://127.0.0.1:8545"')
    toml = toml.replace("[sandbox]", '[sandbox]\nwan_interface = "eth9"')
    (root / "edge.toml").write_text(toml)
    edit_policy(root, lambda h: h["output"].update(require_declared_metrics=True))
    edit_policy(root, lambda h: h["release"]["datasets"].pop("synthetic-cxr"))
    make_synthetic_dataset(root / "data" / "cxr", 30, seed=3)
    (root / "optout.txt").write_text("nobody\n")
    schema = str(ROOT / "examples" / "schema-cxr.json")
    assert edge_cli(["datasets", "add", "cxr", "--path", "data/cxr", "--schema", schema, "--opt-out", "optout.txt",
                     "--config", str(root)]) == 0
    return root


def edit_policy(root: Path, change) -> None:
    path = root / "policies" / "data.json"
    data = json.loads(path.read_text())
    change(data["hospital"])
    path.write_text(json.dumps(data))


def statuses(root: Path) -> dict[str, dict]:
    return {row["id"]: row for row in evaluate(load_settings(root))["controls"]}


def test_the_map_holds_34_controls_naming_files_and_tests_that_exist():
    controls = load_map()
    assert len(controls) == 34 and len({c["id"] for c in controls}) == 34
    assert {c["framework"] for c in controls} == FRAMEWORKS
    for control in controls:
        assert control["check"] in CHECKS, control["id"]
        assert control["title"] and control["mechanism"] and control["reference"], control["id"]
        if control["check"] != "organisational":
            assert control["implemented_by"] and control["tests"], control["id"]
        for place in control["implemented_by"]:
            path, _, text = place.partition(":")
            assert (ROOT / path).exists(), f"{control['id']}: {path} does not exist"
            if text:
                assert text in (ROOT / path).read_text("utf-8"), f"{control['id']}: {path} does not hold {text!r}"
        for test in control["tests"]:
            path, _, name = test.partition("::")
            assert (ROOT / path).is_file(), f"{control['id']}: {path} does not exist"
            if name:  # a Python test function, or a Rego unit test rule
                pattern = rf"^(def {name}\(|{name} (if|:=|=))"
                assert re.search(pattern, (ROOT / path).read_text("utf-8"), re.M), f"{control['id']}: no {test}"


def test_the_rego_rules_controls_are_in_the_map():
    """Each framework reference a policy rule's "# Control:" comment names is mapped."""
    references = " ".join(f"{c['framework']} {c['reference']}" for c in load_map())
    for rego in sorted((ROOT / "policies").glob("*.rego")):
        for comment in re.findall(r"^# Control:.*(?:\n#.*)*", rego.read_text("utf-8"), re.M):
            for found in re.findall(r"Art\. \d+|Principle \d|164\.3\d\d|DSPT \d+", comment):
                assert found in references, f"{rego.name} names {found}, which the map lacks"


def test_json_lists_34_controls_each_with_evidence_and_all_met_on_a_well_set_edge(edge_dir, capsys):
    assert edge_cli(["compliance", "--json", "--config", str(edge_dir)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["controls"]) == 34
    for row in report["controls"]:
        assert row["status"] in (MET, NOT_MET, NOT_APPLICABLE) and row["why"], row["id"]
        assert row["mechanism"] and (row["tests"] or row["status"] == NOT_APPLICABLE), row["id"]
    not_met = {row["id"]: row["why"] for row in report["controls"] if row["status"] == NOT_MET}
    assert not_met == {}
    assert report["counts"] == {MET: 33, NOT_MET: 0, NOT_APPLICABLE: 1}  # HIPAA 164.310: physical safeguards


@pytest.mark.parametrize("weaken, flipped, said", [
    (lambda root: _toml(root, r'tls_cert = "[^"]*"', 'tls_cert = ""', r'tls_key = "[^"]*"', 'tls_key = ""'),
     {"UKGDPR-32-tls", "HIPAA-164.312-e-1"}, "plain HTTP"),
    (lambda root: _toml(root, r"demo = false", "demo = true", r'backend = "auto"', 'backend = "unsafe_software"'),
     {"DSPT-9-attestation", "HIPAA-164.312-c-1"}, "unsafe_software"),
    (lambda root: _toml(root, r'wan_interface = "eth9"\n', ""), {"DSPT-9-5"}, "sandbox.wan_interface"),
    (lambda root: _toml(root, r'backend = "rpc"', 'backend = "embedded"'), {"UKGDPR-5-2"}, "embedded"),
    (lambda root: (root / "keys" / "edge_ed25519.pem").chmod(0o644), {"DSPT-9-keys"}, "edge_ed25519.pem (644)"),
    (lambda root: (root / "state").chmod(0o755), {"DSPT-4-admin"}, "chmod 700"),
    (lambda root: (root / "state" / "audit-head.json").unlink(), {"UKGDPR-30", "HIPAA-164.312-b"}, "audit"),
    (lambda root: edit_policy(root, lambda h: h["consent"].update(min_cohort=3)), {"CALDICOTT-7"}, "min_cohort is 3"),
    (lambda root: edit_policy(root, lambda h: h["release"].update(default_mode="auto")), {"CALDICOTT-2"}, "auto"),
    (lambda root: edit_policy(root, lambda h: h["privacy"].update(dp_required_sensitivities=[])), {"UKGDPR-9"},
     "without differential privacy"),
    (lambda root: edit_policy(root, lambda h: h["release"]["thresholds"].update(max_mia_auc=0.9)),
     {"UKGDPR-5-1-f-membership"}, "0.9"),
    (lambda root: (root / "policies" / "consent.rego").unlink(), {"HIPAA-164.316-b-1"}, "consent.rego"),
    (lambda root: edit_policy(root, lambda h: h["disclosure"].pop("holdback")), {"UKGDPR-25"}, "held-back set"),
    (lambda root: _registry(root, opt_out=""), {"UKGDPR-21", "CALDICOTT-8"}, "without an opt-out list: cxr"),
])
def test_weakening_a_setting_flips_its_control_to_not_met(edge_dir, weaken, flipped, said):
    before = statuses(edge_dir)
    assert all(before[name]["status"] == MET for name in flipped)
    weaken(edge_dir)
    after = statuses(edge_dir)
    changed = {name for name in after if after[name]["status"] != before[name]["status"]}
    assert changed == flipped
    assert all(after[name]["status"] == NOT_MET and said in after[name]["why"] for name in flipped)


def _toml(root: Path, *pairs: str) -> None:
    text = (root / "edge.toml").read_text()
    for pattern, replacement in zip(pairs[::2], pairs[1::2], strict=True):
        text, count = re.subn(pattern, replacement, text)
        assert count == 1, pattern
    (root / "edge.toml").write_text(text)


def _registry(root: Path, **change) -> None:
    path = root / "datasets.json"
    data = json.loads(path.read_text())
    for entry in data["datasets"]:
        entry.update(change)
    path.write_text(json.dumps(data))


def test_unreadable_policy_data_meets_no_control_that_needs_it(edge_dir):
    (edge_dir / "policies" / "data.json").write_text("{ broken")
    after = statuses(edge_dir)
    for name in ("CALDICOTT-7", "UKGDPR-9", "DSPT-1", "CALDICOTT-4", "DSPT-9-attestation"):
        assert after[name]["status"] == NOT_MET and "data.json cannot be read" in after[name]["why"], name
    (edge_dir / "datasets.json").write_text("[not a registry")
    assert statuses(edge_dir)["UKGDPR-21"] == {**after["UKGDPR-21"], "status": NOT_MET,
                                              "why": "the dataset registry cannot be read"}


def test_a_damaged_database_is_not_met_never_a_crash(edge_dir):
    (edge_dir / "state" / "edge.sqlite").write_bytes(b"not a database" * 1000)
    after = statuses(edge_dir)
    assert after["UKGDPR-30"]["status"] == NOT_MET and after["HIPAA-164.312-b"]["status"] == NOT_MET


def test_a_demo_edge_says_what_it_does_not_meet(tmp_path, capsys):
    root = tmp_path / "demo"
    assert edge_cli(["init", str(root), "--demo"]) == 0
    capsys.readouterr()
    assert edge_cli(["compliance", "--config", str(root)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("compliance of edge demo-edge: ")
    assert re.search(r"NOT MET\s+NHS DSPT 9 \(IT protection\): Jobs run only in an attested TEE\n"
                     r"\s+attestation.backend is unsafe_software", text)
    assert "registered without an opt-out list: synthetic-cxr" in text
    assert "release mode auto (no output checker) for: synthetic-cxr" in text


def test_html_is_one_page_with_every_control_escaped(edge_dir, capsys):
    edit_policy(edge_dir, lambda h: h["network"].update(deny_scan_rules=[]))
    assert edge_cli(["compliance", "--html", "--config", str(edge_dir)]) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!DOCTYPE html>") and page.count("<tr class=") == 34
    assert all(f"<td>{c['id']}</td>" in page for c in load_map())
    assert '<tr class="not-met"><td>DSPT-9-scan</td>' in page
    assert "<script" not in page and "src=" not in page and "href=" not in page


def test_the_map_is_the_repositorys_file_never_an_edges(edge_dir):
    assert MAP_FILE == ROOT / "policies" / "compliance.json"
    assert not (edge_dir / "policies" / "compliance.json").exists()
