"""Write labextension/src/contract.ts from jupyter_rapha/protocol/contract.py.

The side panel compares job states, shows the metric-name rule and a DP job's privacy line; its copy of them is
generated, never written by hand, so that the panel cannot drift from the edge.

    python labextension/scripts/gen_contract.py          # write src/contract.ts
    python labextension/scripts/gen_contract.py --check  # exit 1 when it is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "labextension" / "src" / "contract.ts"


def render() -> str:
    sys.path.insert(0, str(ROOT))
    from jupyter_rapha.protocol.contract import contract_document

    doc = contract_document()
    union = " | ".join(_quoted(state) for state in doc["job_states"])
    lines = [
        "// Generated from jupyter_rapha/protocol/contract.py by labextension/scripts/gen_contract.py:",
        "// do not edit; run the script again (tests/extension/test_contract_ts.py fails when this is stale).",
        "",
        f"export type JobState = {union};",
        f"export const JOB_STATES: readonly JobState[] = {_list(doc['job_states'])};",
        "/** States a job ends in; `held` is not one of them (its outputs are still to be decided). */",
        f"export const TERMINAL_STATES: readonly string[] = {_list(doc['terminal_states'])};",
        f"export const ACTIVE_STATES: readonly string[] = {_list(doc['active_states'])};",
        f"export const CANCELLABLE_STATES: readonly string[] = {_list(doc['cancellable_states'])};",
        f"export const METRIC_NAME_PATTERN = new RegExp({json.dumps(doc['metric_name_pattern'])});",
        f"export const METRIC_NAME_RULE = {json.dumps(doc['metric_name_rule'])};",
        f"export const METRIC_NAME_MAX_CHARS = {int(doc['metric_name_max_chars'])};",
        "/** A DP job's privacy counters in its progress: the budget while it runs, the spent once released. */",
        f"export const PRIVACY_PROGRESS: readonly string[] = {_list(doc['privacy_progress'])};",
        "",
    ]
    return "\n".join(lines)


def _list(values: list[str]) -> str:
    return "[" + ", ".join(_quoted(value) for value in values) + "]"


def _quoted(word: str) -> str:
    # the house style's single quotes; state words hold no quote or backslash to escape
    if not word.isidentifier():
        raise ValueError(f"a job state or name {word!r} is not a plain word")
    return f"'{word}'"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TARGET.is_file() or TARGET.read_text("utf-8") != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run python labextension/scripts/gen_contract.py",
                  file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
