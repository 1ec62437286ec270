"""Artifacts and included files in the job spec: strict parsing, the code listing's digest."""

from __future__ import annotations

import pytest

from jupyter_rapha.client import make_jobspec
from jupyter_rapha.protocol.errors import BadInput
from jupyter_rapha.protocol.job_inputs import ArtifactEntry, included_file
from jupyter_rapha.protocol.jobspec import parse_jobspec
from jupyter_rapha.protocol.scan_job import scan_job

DIGEST = "ab" * 32
KEY_ID = "0" * 32


def spec_with(artifacts=(), includes=()):
    return make_jobspec("import helpers\nrapha.save({})\n", "synthetic-cxr", ["image"], 4, 60, {}, KEY_ID,
                        artifacts=tuple(artifacts), includes=tuple(includes))


def test_a_spec_with_artifacts_and_includes_round_trips():
    spec = spec_with([ArtifactEntry("backbone", DIGEST, 1234)], [included_file("helpers.py", "X = 1\n")])
    again = parse_jobspec(spec.to_dict())
    assert again == spec
    assert again.includes[0].module == "helpers"
    assert spec.to_dict()["artifacts"] == [{"name": "backbone", "sha256": DIGEST, "bytes": 1234}]


def test_a_spec_without_them_reads_as_it_always_did():
    document = spec_with().to_dict()
    assert "artifacts" not in document and "includes" not in document


@pytest.mark.parametrize("artifacts, message", [
    ([{"name": "a", "sha256": DIGEST, "bytes": 1}, {"name": "a", "sha256": DIGEST, "bytes": 1}], "twice"),
    ([{"name": "a", "sha256": "AB" * 32, "bytes": 1}], "64 lowercase hex"),
    ([{"name": "a", "sha256": DIGEST, "bytes": 0}], "whole number"),
    ([{"name": "../a", "sha256": DIGEST, "bytes": 1}], "artifact name"),
    ([{"name": "a", "sha256": DIGEST}], "must be"),
])
def test_malformed_artifacts_are_refused(artifacts, message):
    document = dict(spec_with().to_dict(), artifacts=artifacts)
    with pytest.raises(BadInput, match=message):
        parse_jobspec(document)


@pytest.mark.parametrize("path, message", [
    ("../evil.py", "relative path"), ("/etc/x.py", "relative path"), ("notes.txt", "ending in .py"),
    ("socket.py", "already imports"), ("json/__init__.py", "already imports"), ("my-lib.py", "Python names"),
])
def test_include_paths_are_checked(path, message):
    with pytest.raises(BadInput, match=message):
        included_file(path, "x = 1\n")


def test_an_include_whose_code_changed_after_hashing_is_refused():
    document = spec_with(includes=[included_file("helpers.py", "X = 1\n")]).to_dict()
    document["includes"][0]["code"] = "X = 2\n"
    with pytest.raises(BadInput, match="does not match its code"):
        parse_jobspec(document)


def test_two_files_of_one_module_name_are_refused():
    document = spec_with(includes=[included_file("helpers.py", "x = 1\n"),
                                   included_file("helpers/__init__.py", "x = 2\n")]).to_dict()
    with pytest.raises(BadInput, match="same module name"):
        parse_jobspec(document)


def test_the_code_digest_covers_every_included_file():
    one = spec_with(includes=[included_file("helpers.py", "X = 1\n")])
    other = spec_with(includes=[included_file("helpers.py", "X = 2\n")])
    assert one.code_sha256 == other.code_sha256  # the cell is the same
    assert one.code_listing_sha256 != other.code_listing_sha256
    assert [f["path"] for f in one.code_listing()] == ["<cell>", "helpers.py"]


def test_findings_in_an_included_file_name_it_and_its_line():
    report = scan_job("import helpers\n", (included_file("helpers.py", "x = 1\nimport socket\n"),))
    [(path, finding)] = report.high
    assert (path, finding.line) == ("helpers.py", 2)
    assert report.to_dict()["findings"][-1]["file"] == "helpers.py"
    assert not [f for f in report.cell.findings if f.rule == "module-not-allowed"]  # helpers is the job's own


def test_a_job_without_includes_has_the_cells_own_scan_report():
    from jupyter_rapha.protocol.scan import scan_source

    assert scan_job("import torch\n", ()).to_dict() == scan_source("import torch\n").to_dict()
