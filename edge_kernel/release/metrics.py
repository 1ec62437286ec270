"""Release check for metrics (S5): finite numbers under declared plain names, bounded in
count, by the one rule of ``jupyter_rapha.protocol.contract``.

The names and limits are the contract's, so this check refuses nothing that the job spec
parser, the preflight and the runtime let through: a name is refused at submission (or
in the notebook), never here after the budget is spent. It is still checked here, because
the job writes its own metrics.json and can write anything into it.
"""

from __future__ import annotations

import math
from typing import Any

from jupyter_rapha.protocol.contract import METRIC_NAME_RULE, OUTPUT_LIMITS, is_metric_name
from jupyter_rapha.protocol.errors import ReleaseDenied
from jupyter_rapha.protocol.jobspec import OutputPolicy



def check_metrics(data: Any, policy: OutputPolicy) -> dict[str, list[float]]:
    if not isinstance(data, dict) or len(data) > OUTPUT_LIMITS.metric_names:
        raise ReleaseDenied(f"metrics must be an object of at most {OUTPUT_LIMITS.metric_names} named series")
    points, clean = 0, {}
    for name, series in data.items():
        if not is_metric_name(name):
            raise ReleaseDenied(f"a metric name is refused: {METRIC_NAME_RULE}")  # the name itself stays here
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
