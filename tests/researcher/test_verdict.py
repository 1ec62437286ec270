"""One verdict rule for the receipt widget and the side panel (jupyter_rapha/verdict.py):
all PASS green "verified"; a WARN (the UNSAFE software attestation) orange "verified,
with warnings" naming it; a FAIL red "not verified"; a SKIP never green. The side panel's
TypeScript copy replays the cases written here (labextension/test/verdict_cases.json).

Regenerate the cases after changing the rule:
``python -m tests.researcher.test_verdict`` (then ``cd labextension && npm test``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from jupyter_rapha.protocol.checks import Check, Verification
from jupyter_rapha.verdict import COLOURS, decide
from jupyter_rapha.verify import verify_document
from jupyter_rapha.widget import ReceiptWidget
from tests.receipts.receipt_factory import METRICS, WEIGHTS
from tests.protocol.test_receipt_attestation import EDGE, attested_predicate, receipt

ROOT = Path(__file__).resolve().parents[2]
CASES_FILE = ROOT / "labextension" / "test" / "verdict_cases.json"
UNSAFE = "UNSAFE software stand-in (demo only): bound to this job, signed by edge key k; no hardware evidence"


def c(name: str, status: str, detail: str = "") -> list[str]:
    return [name, status, detail or f"{name} detail"]


PASSING = [c("signature", "pass"), c("statement", "pass"), c("weights", "pass"), c("metrics", "pass")]
INPUTS = [
    ("all pass", PASSING + [c("anchor", "pass")], False),
    ("unsafe attestation", PASSING + [c("attestation", "warn", UNSAFE), c("anchor", "pass")], False),
    ("no quote recorded", PASSING + [c("attestation", "warn", "the edge recorded no attestation quote"),
                                     c("anchor", "pass")], False),
    ("offline skip is a named warning", PASSING + [c("anchor", "skipped", "offline: chain not consulted")], True),
    ("online skip is a failure", PASSING + [c("anchor", "skipped", "pass --rpc URL")], False),
    ("a failure wins over a warning", [c("signature", "pass"), c("attestation", "warn", UNSAFE),
                                       c("weights", "fail")], False),
    ("pending anchor", PASSING + [c("attestation", "warn", UNSAFE), c("anchor", "pending")], False),
    ("pending behind a failure", [c("signature", "fail"), c("anchor", "pending")], False),
    ("nothing checked", [], True),
    ("unknown status fails closed", PASSING + [c("anchor", "bogus")], True),
]


def cases() -> list[dict]:
    out = []
    for title, checks, offline in INPUTS:
        verdict = decide([tuple(check) for check in checks], skips_allowed=offline)
        out.append({"title": title, "report": {"offline": offline,
                                               "checks": [{"name": n, "status": s, "detail": d} for n, s, d in checks]},
                    "verdict": {"kind": verdict.kind, "label": verdict.label, "colour": verdict.colour}})
    return out


def test_the_rule():
    by_title = {case["title"]: case["verdict"] for case in cases()}
    assert by_title["all pass"] == {"kind": "pass", "label": "verified", "colour": COLOURS["pass"]}
    assert by_title["unsafe attestation"] == {"kind": "warn", "label": "verified, with warnings: attestation (UNSAFE)",
                                              "colour": "#bc4c00"}
    assert by_title["no quote recorded"]["label"] == "verified, with warnings: attestation"
    assert by_title["offline skip is a named warning"]["label"] == "verified, with warnings: anchor not checked"
    assert by_title["online skip is a failure"]["label"] == "not verified: anchor not checked"
    assert by_title["a failure wins over a warning"] == {"kind": "fail", "label": "not verified: weights",
                                                         "colour": "#cf222e"}
    assert by_title["pending anchor"]["kind"] == "pending"
    assert by_title["pending behind a failure"]["kind"] == "fail"
    assert by_title["nothing checked"]["kind"] == by_title["unknown status fails closed"]["kind"] == "fail"
    assert not any(case["verdict"]["kind"] == "pass" for case in cases()
                   if any(ch["status"] != "pass" for ch in case["report"]["checks"]))  # SKIP/WARN never green


def test_the_side_panel_cases_are_the_ones_this_rule_gives():
    assert json.loads(CASES_FILE.read_text()) == cases(), \
        "labextension/test/verdict_cases.json is stale: run python -m tests.researcher.test_verdict"


@pytest.mark.slow
def test_the_typescript_copy_agrees():
    npm = shutil.which("npm")
    if npm is None or not (ROOT / "labextension" / "node_modules").exists():
        pytest.skip("node and the labextension's node_modules are needed")
    done = subprocess.run([npm, "test"], cwd=ROOT / "labextension", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "verdict" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]


def test_a_receipt_with_the_unsafe_software_attestation_is_orange_and_says_so():
    document = receipt(attested_predicate(7))
    real = verify_document(document, EDGE.public, weights=WEIGHTS, metrics=METRICS, offline=True)
    [attestation] = [check for check in real.checks if check.name == "attestation"]
    assert attestation.status == "warn"
    # the same checks with the anchor found on a chain: only the attestation warns
    anchored = Verification([check if check.name != "anchor" else Check("anchor", "pass", "tx in block 3")
                             for check in real.checks], real.statement)
    widget = ReceiptWidget(document, anchored)
    html = widget._repr_html_()
    headline = html.split("</div>", 2)[0]
    assert "verified, with warnings: attestation (UNSAFE)" in headline and "color:#bc4c00" in headline
    assert "#1a7f37" not in headline and widget.verified
    assert widget.text().startswith("Rapha receipt: verified, with warnings: attestation (UNSAFE)")
    assert "WARN    attestation: UNSAFE" in widget.text()
    offline = ReceiptWidget(document, real)  # offline the anchor was not looked at either: named too
    assert "verified, with warnings: attestation (UNSAFE), anchor not checked" in offline._repr_html_()


def test_all_pass_is_green_and_a_failure_red():
    document = receipt(attested_predicate(8))
    real = verify_document(document, EDGE.public, weights=WEIGHTS, metrics=METRICS, offline=True)
    green = Verification([Check(ch.name, "pass", ch.detail) for ch in real.checks], real.statement)
    assert "color:#1a7f37'>Rapha receipt: &#10003; verified</div>" in ReceiptWidget(document, green)._repr_html_()
    broken = verify_document(document, EDGE.public, weights=b"other", metrics=METRICS, offline=True)
    html = ReceiptWidget(document, broken)._repr_html_()
    assert "color:#cf222e'>Rapha receipt: &#10007; not verified: " in html


if __name__ == "__main__":
    CASES_FILE.write_text(json.dumps(cases(), indent=2) + "\n")
    print(f"wrote {CASES_FILE.relative_to(ROOT)}")
