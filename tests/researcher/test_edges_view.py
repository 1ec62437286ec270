"""What the side panel's edges view and `rapha edges` say of an edge's environment: one
summary rule (protocol/environment.py ``Environment.summary``), replayed by the TypeScript
copy (labextension/src/edges.ts) from labextension/test/edge_cases.json.

Regenerate the cases after changing the summary:
``python -m tests.researcher.test_edges_view`` (then ``cd labextension && npm test``).
"""

from __future__ import annotations

import json
from pathlib import Path

from jupyter_rapha.protocol.environment import KEY_PACKAGES, parse_environment

ROOT = Path(__file__).resolve().parents[2]
CASES_FILE = ROOT / "labextension" / "test" / "edge_cases.json"
BASE = {"python": "3.11.7", "implementation": "cpython", "complete": True, "modules": {}, "stdlib": ["json"]}
INPUTS = [
    ("all key packages, in the key order", {"PyYAML": "6.0.2", "numpy": "2.4.6", "torch": "2.13.0+cpu",
                                            "monai": "1.6.1", "pydicom": "3.0.2", "safetensors": "0.8.0"}, True),
    ("no key package", {"PyYAML": "6.0.2"}, True),
    ("nothing installed", {}, True),
    ("a partial listing says so", {"torch": "2.13.0", "numpy": "2.4.6"}, False),
    ("names compare normalised", {"Torch": "2.13.0", "NumPy": "2.4.6"}, True),
]


def cases() -> list[dict]:
    out = []
    for title, packages, complete in INPUTS:
        environment = {**BASE, "packages": packages, "complete": complete}
        out.append({"title": title, "environment": environment,
                    "summary": parse_environment(environment).summary()})
    return out


def test_the_summary():
    by_title = {case["title"]: case["summary"] for case in cases()}
    assert by_title["all key packages, in the key order"] == (
        "Python 3.11.7, 6 packages: torch 2.13.0+cpu, numpy 2.4.6, monai 1.6.1, pydicom 3.0.2, safetensors 0.8.0")
    assert by_title["no key package"] == "Python 3.11.7, 1 package"
    assert by_title["nothing installed"] == "Python 3.11.7, 0 packages"
    assert by_title["a partial listing says so"] == (
        "Python 3.11.7, 2 packages listed (not all it has): torch 2.13.0, numpy 2.4.6")
    assert by_title["names compare normalised"].endswith(": torch 2.13.0, numpy 2.4.6")


def test_the_side_panel_cases_are_the_ones_this_rule_gives():
    assert json.loads(CASES_FILE.read_text()) == cases(), \
        "labextension/test/edge_cases.json is stale: run python -m tests.researcher.test_edges_view"


def test_the_side_panel_shows_the_same_key_packages():
    listed = ", ".join(f"'{name}'" for name in KEY_PACKAGES)
    assert f"export const KEY_PACKAGES = [{listed}];" in (ROOT / "labextension" / "src" / "edges.ts").read_text()


if __name__ == "__main__":
    CASES_FILE.write_text(json.dumps(cases(), indent=2) + "\n")
    print(f"wrote {CASES_FILE.relative_to(ROOT)}")
