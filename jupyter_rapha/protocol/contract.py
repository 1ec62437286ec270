"""The one contract for what leaves an edge: metric names, output limits, job states.

Every place that checks an output reads its rule from here: the job spec parser, the
notebook preflight, the local dry run, the job's ``rapha`` runtime, the edge's release
checks, the job store, the client, the server extension and (through a generated copy,
``labextension/src/contract.ts``) the side panel. Before this module there were four
metric-name rules (64, 64 and 48 characters, and none in the dry run), so a name the
release check refuses passed the job spec and the runtime and was refused only after the
job had spent its budget. One rule, one message, checked first where it is cheapest.

Pure data and pure functions: both sides and the job process import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# The strictest of the rules that were in force (the release check's): a plain identifier
# without dots or dashes, so a name reads the same in JSON, in Python keyword arguments
# and in a chart legend, and cannot be used to spell much (every name is a channel).
METRIC_NAME_MAX_CHARS = 48
METRIC_NAME_PATTERN = rf"^[A-Za-z][A-Za-z0-9_]{{0,{METRIC_NAME_MAX_CHARS - 1}}}$"
_METRIC_NAME = re.compile(METRIC_NAME_PATTERN)
# A fixed text: the runtime raises it inside the sandbox, where the name itself may be
# built from a record, so the message names the rule and never the name.
METRIC_NAME_RULE = (f"metric names are letters, digits and '_', start with a letter and are at most "
                    f"{METRIC_NAME_MAX_CHARS} characters")
_SHOWN_NAME_CHARS = 60  # a refused name quoted back on the researcher's side, shortened


def is_metric_name(name: object) -> bool:
    # fullmatch: match's "$" would let a final newline through
    return isinstance(name, str) and _METRIC_NAME.fullmatch(name) is not None


def metric_name_refusal(name: object) -> str | None:
    """The message for a metric name the edge would refuse, None for a good one. Used where
    the researcher's own name may be quoted (preflight, the dry run, the job spec parser):
    the same words everywhere, so a refusal reads the same wherever it is met first."""
    if is_metric_name(name):
        return None
    shown = name if isinstance(name, str) else repr(name)
    if len(shown) > _SHOWN_NAME_CHARS:
        shown = shown[:_SHOWN_NAME_CHARS] + "…"
    return f"metric name {shown!r} is refused: {METRIC_NAME_RULE}"


@dataclass(frozen=True)
class OutputLimits:
    """What an edge lets leave, as data with safe defaults. A job's output policy may ask
    for less (``JobSpec.output_policy``), never for more than the ``max_*`` here."""

    metric_names: int = 64  # named series in metrics.json
    metric_points: int = 1_000_000  # the most points any job may declare
    default_metric_points: int = 10_000  # a job's limit when its output policy names none
    metrics_bytes: int = 16 * 1024 * 1024  # out/metrics.json as the job wrote it
    # metrics.json as released: the edge writes every point as a float again ("1" becomes
    # "1.0", up to 25 characters a point), so a verifier reading it allows more than the above
    released_metrics_bytes: int = 64 * 1024 * 1024
    error_report_bytes: int = 4096  # out/error.json: a type, a line, one fixed message
    default_weights_bytes: int = 64 * 1024 * 1024
    weights_bytes: int = 2**40  # the most a job's output policy may allow
    weight_tensors: int = 10_000  # named tensors in weights.safetensors
    weight_dims: int = 32  # dimensions of one tensor
    weights_header_bytes: int = 16 * 1024 * 1024  # the safetensors JSON header

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"output limit {name} must be a positive whole number")
        if self.default_metric_points > self.metric_points or self.default_weights_bytes > self.weights_bytes:
            raise ValueError("an output limit's default is above its maximum")


OUTPUT_LIMITS = OutputLimits()


class JobState(StrEnum):
    """A job's state, as the edge stores it and every surface shows it.

    submitted -> running -> held -> completed (released) | refused (release refused);
    denied (a gate said no), failed (the job or the edge broke) and cancelled (the
    researcher asked) end a job before anything is released. Where the dataset's policy
    asks for a data steward's approval before code runs, a job whose gates passed waits in
    awaiting_approval, and goes back to submitted (its gates run again) once approved. The values are the wire
    format: lowercase words, stored in SQLite, sent in JSON and compared in TypeScript.
    """

    SUBMITTED = "submitted"
    AWAITING_APPROVAL = "awaiting_approval"  # gates passed; waits for the data stewards' approval
    RUNNING = "running"
    HELD = "held"  # finished; outputs held at the edge until the disclosure checks decide
    COMPLETED = "completed"
    REFUSED = "refused"
    DENIED = "denied"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES: frozenset[JobState] = frozenset(
    {JobState.COMPLETED, JobState.REFUSED, JobState.DENIED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_STATES: frozenset[JobState] = frozenset(set(JobState) - TERMINAL_STATES)
# Held is not cancellable: the job has run and its records are counted; what is left is the
# hospital's decision on its outputs, which a researcher must not be able to cut short.
CANCELLABLE_STATES: frozenset[JobState] = frozenset(
    {JobState.SUBMITTED, JobState.AWAITING_APPROVAL, JobState.RUNNING})


# A DP job's privacy counters in its progress, as the edge reports them and the notebook and
# the side panel show them: the policy's budget while it runs, the trainer's spent (from the
# signed privacy section) once released. The policy's numbers and the receipt's, no record data.
PRIVACY_PROGRESS = ("epsilon_target", "epsilon_spent", "delta")


def contract_document() -> dict[str, Any]:
    """The contract as plain JSON data, for the side panel's generated copy."""
    return {
        "job_states": [state.value for state in JobState],
        "terminal_states": sorted(state.value for state in TERMINAL_STATES),
        "active_states": sorted(state.value for state in ACTIVE_STATES),
        "cancellable_states": sorted(state.value for state in CANCELLABLE_STATES),
        "metric_name_pattern": METRIC_NAME_PATTERN,
        "metric_name_rule": METRIC_NAME_RULE,
        "metric_name_max_chars": METRIC_NAME_MAX_CHARS,
        "privacy_progress": list(PRIVACY_PROGRESS),
    }
