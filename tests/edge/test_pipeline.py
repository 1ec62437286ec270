"""The gate pipeline fails closed (S4): a deny, a crash, a malformed or missing decision,
a gate that reports itself absent and an empty pipeline all refuse the job, and no gate
runs after a refusal."""

from __future__ import annotations

import pytest

from edge_kernel.gates.pipeline import GateContext, GateResult, run_gates
from edge_kernel.release.receipts import gate_entries
from jupyter_rapha.protocol.jobspec import parse_jobspec
from tests.protocol.test_jobspec import spec_dict


class Fixed:
    def __init__(self, name, result):
        self.name, self.result, self.calls = name, result, 0

    def check(self, ctx):
        self.calls += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def ctx():
    return GateContext(parse_jobspec(spec_dict()), "r" * 64, None, None, None)


def test_all_passing_gates_allow_and_later_gates_see_earlier_results():
    seen = {}

    class Reader:
        name = "policy"

        def check(self, context):
            seen.update(context.results)
            return GateResult("policy", "pass")

    outcome = run_gates([Fixed("scan", GateResult("scan", "pass", {"x": 1})), Reader()], ctx())
    assert outcome.allowed and list(seen) == ["scan"]


@pytest.mark.parametrize("result,words", [
    (GateResult("scan", "deny", reasons=("cell line 3: socket",)), "cell line 3"),
    (RuntimeError("boom with a patient name"), "RuntimeError"),
    ({"allow": True}, "no valid decision"),
    (GateResult("scan", "maybe"), "no valid decision"),
    (GateResult("scan", "absent"), "scan"),
])
def test_every_kind_of_failure_denies_and_stops_the_pipeline(result, words):
    later = Fixed("policy", GateResult("policy", "pass"))
    outcome = run_gates([Fixed("scan", result), later], ctx())
    assert not outcome.allowed and later.calls == 0
    assert words in " ".join(outcome.reasons)
    assert "patient" not in " ".join(outcome.reasons)  # a crash leaves as its type only


def test_empty_pipeline_denies():
    assert not run_gates([], ctx()).allowed


def test_unsafe_passes_but_is_recorded():
    outcome = run_gates([Fixed("attestation", GateResult("attestation", "unsafe", {"unsafe": "software"}))], ctx())
    assert outcome.allowed
    entries = {e["name"]: e["outcome"] for e in gate_entries(outcome.results)}
    assert entries["attestation"] == "unsafe" and entries["policy"] == "absent"
