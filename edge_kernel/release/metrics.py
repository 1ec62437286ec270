"""Release checks for metrics and for the error report (S5).

Metrics leave as finite numbers under plain names, bounded in count. An error leaves as
a builtin exception type and a line number in the cell: a custom exception class name
is replaced, because the job chooses it and could spell data with it.
"""

from __future__ import annotations

import builtins
import math
import re
from typing import Any

from jupyter_rapha.protocol import bounded
from jupyter_rapha.protocol.errors import ReleaseDenied
from jupyter_rapha.protocol.jobspec import OutputPolicy

MAX_METRICS_BYTES = 8 * 1024 * 1024
MAX_METRIC_NAMES = 64
METRICS_DEPTH = 4  # {"name": [numbers]} is two levels
_METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
_BUILTIN_ERRORS = frozenset(
    name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException)
)


def parse_metrics(raw: bytes | None, policy: OutputPolicy) -> dict[str, list[float]]:
    if raw is None:
        return {}
    if len(raw) > MAX_METRICS_BYTES:
        raise ReleaseDenied("metrics file is larger than the edge accepts")
    # the job wrote this file: bounded like any request body (depth, UTF-8, surrogates)
    data = bounded.loads(raw, what="metrics file", max_depth=METRICS_DEPTH, error=ReleaseDenied)
    return check_metrics(data, policy)


def check_metrics(data: Any, policy: OutputPolicy) -> dict[str, list[float]]:
    if not isinstance(data, dict) or len(data) > MAX_METRIC_NAMES:
        raise ReleaseDenied(f"metrics must be an object of at most {MAX_METRIC_NAMES} named series")
    points, clean = 0, {}
    for name, series in data.items():
        if not isinstance(name, str) or not _METRIC_NAME.fullmatch(name):
            raise ReleaseDenied("a metric name is not a plain identifier (letters, digits, '_')")
        if name not in policy.metric_names:
            raise ReleaseDenied(f"metric '{name}' was not declared in the output policy")
        if not isinstance(series, list) or not all(_finite(v) for v in series):
            raise ReleaseDenied(f"metric '{name}' must be a list of finite numbers")
        points += len(series)
        clean[name] = [float(v) for v in series]
    if points > policy.max_metric_points:
        raise ReleaseDenied(f"{points} metric points, over the limit of {policy.max_metric_points}")
    return clean


def _finite(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))  # float(): an int past 1e308 is no float at all
    except OverflowError:
        return False


def sanitize_error(error: Any, cell_lines: int) -> dict[str, Any]:
    """Keep only a builtin exception type, a line inside the cell and a message that is one
    of the runtime's own fixed texts (see ``wire.messages``)."""
    from ..wire.messages import public_message

    if not isinstance(error, dict):
        return {"type": "Exception", "line": None, "message": None}
    kind = error.get("type")
    line = error.get("line")
    return {
        "type": kind if isinstance(kind, str) and kind in _BUILTIN_ERRORS else "Exception",
        "line": line if isinstance(line, int) and not isinstance(line, bool) and 1 <= line <= cell_lines else None,
        "message": public_message(error.get("message")),
    }
