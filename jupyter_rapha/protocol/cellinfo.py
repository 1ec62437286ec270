"""What a cell declares about itself, read from its syntax tree (pure).

The default output policy asks a job to declare the metric names it will log (S5: metrics
leave only under declared names). Researchers should not have to repeat what their cell
already says, so the names are read from the keyword arguments of ``rapha.log(...)``
calls. A call with ``**kwargs`` cannot be read and makes the declaration explicit.
"""

from __future__ import annotations

import ast
from typing import TypeGuard

from .contract import OUTPUT_LIMITS, metric_name_refusal
from .errors import BadInput


def logged_metric_names(code: str) -> tuple[str, ...]:
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise BadInput(f"the cell does not parse (line {exc.lineno}): {exc.msg}") from exc
    names: set[str] = set()
    for node in ast.walk(tree):
        if _is_rapha_log(node):
            assert isinstance(node, ast.Call)
            for keyword in node.keywords:
                if keyword.arg is None:
                    raise BadInput(f"rapha.log(**...) at line {node.lineno} hides the metric names",
                                   hint="declare them with --metrics name,name")
                names.add(keyword.arg)
    return tuple(sorted(names))


def _is_rapha_log(node: ast.AST) -> TypeGuard[ast.Call]:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "log"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "rapha")


def metric_name_problems(code: str, first_line: int = 1) -> list[str]:
    """One line per ``rapha.log`` keyword the edge would refuse as a metric name, by the
    contract's rule and in its words, numbered as the editor numbers the cell's lines
    (``first_line``: the editor's number of the cell's first line). Shared by the
    preflight and the local dry run, so both refuse the same names the same way, before
    the cell runs or leaves. A cell that does not parse has none here (the scanner says so)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    problems = []
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and _is_rapha_log(node)]
    for node in sorted(calls, key=lambda call: call.lineno):
        for keyword in node.keywords:
            refusal = metric_name_refusal(keyword.arg) if keyword.arg is not None else None
            if refusal is not None:
                problems.append(f"line {node.lineno + first_line - 1}: {refusal}")
    names = {k.arg for call in calls for k in call.keywords if k.arg is not None}
    if len(names) > OUTPUT_LIMITS.metric_names:
        problems.append(f"the cell logs {len(names)} metric names; at most {OUTPUT_LIMITS.metric_names} may leave")
    return problems
