"""The error report of a failed job, sanitised in one place (release/error_report.py):
only a built-in type, a line of the cell and one of the runtime's fixed texts leave."""

from __future__ import annotations

import json

import pytest

from edge_kernel.release import error_report as report_module
from edge_kernel.release import metrics as metrics_module
from edge_kernel.release.error_report import error_report
from jupyter_rapha.protocol.contract import METRIC_NAME_RULE, OUTPUT_LIMITS

CODE = "x = 1\ny = 2\nraise KeyError(x)\n"  # 3 lines, and compile() may name a 4th


def report(doc: object, code: str = CODE) -> dict | None:
    return error_report(json.dumps(doc).encode(), code)


def test_an_honest_report_leaves_as_written():
    assert report({"type": "KeyError", "line": 3, "message": None}) == {"type": "KeyError", "line": 3, "message": None}
    assert report({"type": "ValueError", "line": 1, "message": METRIC_NAME_RULE})["message"] == METRIC_NAME_RULE


@pytest.mark.parametrize("doc,expected", [
    ({"type": "DOE_JANE", "line": 2, "message": None}, {"type": "Exception", "line": 2, "message": None}),
    ({"type": "KeyError", "line": 999, "message": "MRN1234567"}, {"type": "KeyError", "line": None, "message": None}),
    ({"type": "KeyError", "line": True, "message": ["budget exhausted"]}, {"type": "KeyError", "line": None,
                                                                            "message": None}),
    ({"type": "KeyError", "line": 0}, {"type": "KeyError", "line": None, "message": None}),
    (["KeyError", 3], {"type": "Exception", "line": None, "message": None}),
    ("DOE^JANE", {"type": "Exception", "line": None, "message": None}),
])
def test_a_forged_report_keeps_nothing_that_could_carry_data(doc, expected):
    assert report(doc) == expected


def test_bytes_that_are_no_report_still_say_the_job_failed():
    for raw in (b"", b"{", b"\xff\xfe", b"[" * 10_000):
        assert error_report(raw, CODE) == {"type": "Exception", "line": None, "message": None}
    assert error_report(None, CODE) is None


def test_the_line_after_a_final_newline_is_a_line_of_the_cell():
    assert report({"type": "SyntaxError", "line": 4}, CODE)["line"] == 4
    assert report({"type": "SyntaxError", "line": 5}, CODE)["line"] is None


def test_there_is_one_sanitiser():
    assert not hasattr(metrics_module, "sanitize_error") and not hasattr(metrics_module, "parse_metrics")
    assert report_module.BUILTIN_EXCEPTIONS >= {"KeyError", "ValueError", "SyntaxError", "BaseException"}
    assert OUTPUT_LIMITS.error_report_bytes == 4096


def test_the_line_leaves_numbered_as_the_editor_numbers_it():
    # under %%rapha_train the code's line 3 is the editor's line 4
    assert error_report(json.dumps({"type": "KeyError", "line": 3}).encode(), CODE, 2)["line"] == 4
    # checked as a line of the code first: a forged line stays None, however it is shifted
    assert error_report(json.dumps({"type": "KeyError", "line": 5}).encode(), CODE, 2)["line"] is None
    assert error_report(b"{", CODE, 2)["line"] is None
