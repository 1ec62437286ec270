"""Notebook preflight: scanner findings and the dry-run policy, in plain words with lines."""

from __future__ import annotations

import importlib.util
from pathlib import Path

if importlib.util.find_spec("torch"):  # torch must load before regopy in one process
    import torch  # noqa: F401

from jupyter_rapha.preflight import preflight
from jupyter_rapha.protocol.policy import PolicyBundle

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
JOB = {"dataset": "synthetic-cxr", "fields": ["image", "finding"], "budget": {"max_records": 100, "max_seconds": 600},
       "output_policy": {"max_weights_bytes": 1000, "metric_names": ["loss"], "max_metric_points": 100},
       "params": {"epochs": 2}}
ALICE = {"name": "alice", "key_id": "00", "roles": ["researcher"], "purposes": ["research"]}


def published() -> PolicyBundle:
    modules = {p.name: p.read_text() for p in POLICY_DIR.glob("*.rego") if not p.name.endswith("_test.rego")}
    return PolicyBundle.from_texts(modules, (POLICY_DIR / "data.json").read_text())


def test_clean_cell_passes_dry_run():
    result = preflight("import torch\nmodel = torch.nn.Linear(2, 2)\n", job=JOB, policy=published(), researcher=ALICE)
    assert result.likely_allowed and result.explanations == (), result.explanations


def test_scan_finding_explained_with_line_and_code():
    result = preflight("import torch\nimport os\nos.system('id')\n")
    assert not result.likely_allowed
    assert result.explanations[0].startswith("line 3 (will be refused): reaches os.system")
    assert "3 | os.system('id')" in result.explanations[0]


def test_policy_refusal_explained_once_per_finding():
    result = preflight("import pandas\n", job=JOB, policy=published(), researcher=ALICE)
    assert not result.likely_allowed
    assert len([e for e in result.explanations if "pandas" in e]) == 1


def test_policy_only_refusal_is_explained():
    job = {**JOB, "fields": ["image", "patient_name"]}
    result = preflight("x = 1\n", job=job, policy=published(), researcher=ALICE)
    assert any("would refuse the job: field 'patient_name'" in e for e in result.explanations)


def test_broken_published_policy_refuses():
    result = preflight("x = 1\n", job=JOB, policy=PolicyBundle.from_texts({"p.rego": "package rapha\nx := \n"}))
    assert not result.likely_allowed and "does not compile" in result.explanations[0]


def test_a_metric_name_the_edge_refuses_is_refused_here_in_the_dry_runs_words():
    from jupyter_rapha.protocol.contract import metric_name_refusal
    from tests.researcher.test_local import LONG_NAME, NAMED_CELL

    for result in (preflight(NAMED_CELL, first_line=2), preflight(NAMED_CELL, job=JOB, policy=published(),
                                                                  researcher=ALICE, first_line=2)):
        assert not result.likely_allowed
        assert result.metric_names_refused == (f"line 4: {metric_name_refusal(LONG_NAME)}",)
        assert result.metric_names_refused[0] in result.explanations


def test_a_48_character_name_passes():
    result = preflight(f"rapha.log({'a' * 48}=1.0)\n")
    assert result.likely_allowed and result.metric_names_refused == ()


def test_lines_are_the_editors_under_the_magic_line():
    result = preflight("import torch\nimport os\nos.system('id')\n", first_line=2)
    assert result.explanations[0].startswith("line 4 (will be refused): reaches os.system")
    assert "4 | os.system('id')" in result.explanations[0]


def test_more_metric_names_than_may_leave_are_refused_here_too():
    from jupyter_rapha.protocol.contract import OUTPUT_LIMITS

    count = OUTPUT_LIMITS.metric_names + 1
    cell = "rapha.log(" + ", ".join(f"m{i}=1.0" for i in range(count)) + ")\n"
    result = preflight(cell)
    assert not result.likely_allowed
    assert result.metric_names_refused == (f"the cell logs {count} metric names; at most {count - 1} may leave",)
    assert preflight("rapha.log(" + ", ".join(f"m{i}=1.0" for i in range(count - 1)) + ")\n").likely_allowed


SITE = {"python": "3.11.7", "implementation": "cpython", "complete": True,
        "packages": {"torch": "2.13.0", "numpy": "2.4.6", "monai": "1.6.1"},
        "modules": {"torch": ["torch"], "numpy": ["numpy"], "monai": ["monai"]}, "stdlib": ["json", "os"]}


def test_an_import_the_edge_lacks_stops_the_cell_naming_it_and_its_line():
    from jupyter_rapha.protocol.environment import parse_environment

    code = "import torch\nimport monai\nimport lightgbm\nmodel = torch.nn.Linear(2, 2)\n"
    result = preflight(code, job=JOB, policy=published(), researcher=ALICE, first_line=2,
                       environment=parse_environment(SITE), site="edge north")
    assert not result.likely_allowed and result.scan.high == () and result.decision.allowed is False
    assert result.imports_missing == ("line 4: edge north has no module lightgbm: remove the import or ask the "
                                      "hospital to install it (Python 3.11.7 there)",)
    assert result.imports_missing[0] in result.explanations


def test_the_imports_of_files_sent_with_the_cell_are_checked_too():
    from jupyter_rapha.protocol.environment import CodeFile, parse_environment

    helper = CodeFile("helpers/augment.py", "import json\nimport albumentations\n")
    result = preflight("import helpers.augment\nimport torch\n", environment=parse_environment(SITE), files=[helper])
    assert result.imports_missing and result.imports_missing[0].startswith(
        "helpers/augment.py line 2: the edge has no module albumentations")


def test_a_cell_the_edge_can_import_and_a_partial_listing_pass():
    from jupyter_rapha.protocol.environment import parse_environment

    assert preflight("import torch, monai, json\n", environment=parse_environment(SITE)).likely_allowed
    partial = preflight("import torch\nimport scipy\n", environment=parse_environment({**SITE, "complete": False}))
    assert partial.likely_allowed and partial.imports_missing == ()
    assert "the edge has no module scipy in the packages it lists" in partial.explanations[-1]
