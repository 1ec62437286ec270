"""The error report of a failed job: what of the cell's exception may leave (S5).

The one place it is sanitised. The job wrote ``out/error.json`` itself and the cell can
write it too, with anything in it, so every field is checked here against what may leave,
and nothing the job said is trusted about where it came from:

- the type only when it is the name of a built-in exception class (a class the cell
  defines can be named after a record: ``type(secret, (Exception,), {})``);
- the line only when it is a line of the cell (the researcher wrote every line, so its
  number tells them nothing new; any other number is a channel);
- the message only when it is one of the runtime's own fixed texts
  (``wire.messages.RUNTIME_MESSAGES``); any other message can carry record values
  (``KeyError: 'DOE^JANE'``).

A report that does not parse still says the job failed, as ``Exception`` with no line.
The line leaves numbered as the researcher's editor numbers it: the job spec's
``cell_first_line`` is the editor's number of the code's first line (2 under a
``%%rapha_train`` line), so the notebook, ``rapha run`` and the side panel all show the
number the researcher sees beside the code.
"""

from __future__ import annotations

import builtins
from typing import Any

from jupyter_rapha.protocol import bounded
from jupyter_rapha.protocol.errors import SandboxFault

from ..wire.messages import public_message

BUILTIN_EXCEPTIONS = frozenset(
    name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException))
GENERIC = {"type": "Exception", "line": None, "message": None}


def error_report(raw: bytes | None, code: str, cell_first_line: int = 1) -> dict[str, Any] | None:
    """The report that may leave, from the bytes of out/error.json; None when there are none."""
    if raw is None:
        return None
    try:
        doc = bounded.loads(raw, what="out/error.json", error=SandboxFault)
    except SandboxFault:
        return dict(GENERIC)
    report = sanitized(doc, cell_lines(code))
    if report["line"] is not None:
        report["line"] += cell_first_line - 1  # checked as a line of the code, shown as the editor's
    return report


def sanitized(doc: Any, lines: int) -> dict[str, Any]:
    if not isinstance(doc, dict):
        return dict(GENERIC)
    kind, line = doc.get("type"), doc.get("line")
    return {
        "type": kind if isinstance(kind, str) and kind in BUILTIN_EXCEPTIONS else "Exception",
        "line": line if isinstance(line, int) and not isinstance(line, bool) and 1 <= line <= lines else None,
        "message": public_message(doc.get("message")),
    }


def cell_lines(code: str) -> int:
    # as compile() counts them: a SyntaxError can name the line after a final newline
    return code.count("\n") + 1
