"""The job a researcher asks an edge to run. Parsing is strict: unknown keys, wrong
types and out-of-range values are refused with a message that says what to fix, and
any input at all (strings with lone surrogates, huge numbers, any type) meets BadInput
and nothing else."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .contract import OUTPUT_LIMITS, metric_name_refusal
from .errors import BadInput
from .job_inputs import ArtifactEntry, IncludedFile, code_listing, code_listing_digest, parse_artifacts, parse_includes

JOBSPEC_VERSION = 1
MAX_CODE_BYTES = 256 * 1024
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
ParamValue = str | int | float | bool
MAX_EXACT_INT = 2**53  # canonical JSON (RFC 8785) holds integers exactly up to here
MAX_CELL_FIRST_LINE = 1_000_000
# Job processes under one sandbox (torch.distributed ranks); the edge's own limit
# (sandbox.max_processes) is usually far lower.
MAX_JOB_PROCESSES = 64


@dataclass(frozen=True)
class Budget:
    max_records: int
    max_seconds: int = 3600


@dataclass(frozen=True)
class OutputPolicy:
    max_weights_bytes: int = OUTPUT_LIMITS.default_weights_bytes
    metric_names: tuple[str, ...] = ()  # the only names that may leave; empty: no metrics leave
    max_metric_points: int = OUTPUT_LIMITS.default_metric_points


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    researcher_key_id: str
    created: str
    nonce: str
    code: str
    code_sha256: str
    dataset: str
    fields: tuple[str, ...]
    budget: Budget
    output_policy: OutputPolicy = field(default_factory=OutputPolicy)
    params: dict[str, ParamValue] = field(default_factory=dict)
    # The editor's number of the code's first line (2 under a %%rapha_train line): the edge
    # numbers an error's line as the researcher's editor does, so every surface agrees.
    cell_first_line: int = 1
    version: int = JOBSPEC_VERSION
    # Safetensors weights brought in (by digest; the bytes are uploaded beside) and Python
    # files that travel with the cell (job_inputs). Empty: left out of the document.
    artifacts: tuple[ArtifactEntry, ...] = ()
    includes: tuple[IncludedFile, ...] = ()
    # Job processes started under one sandbox, ranks of one torch.distributed group; more
    # than one asks for the seccomp variant that allows TCP on the job's own loopback.
    processes: int = 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fields"] = list(self.fields)
        data["output_policy"]["metric_names"] = list(self.output_policy.metric_names)
        if self.cell_first_line == 1:
            del data["cell_first_line"]  # the default, left out: a cell file's spec reads as it always did
        if self.processes == 1:
            del data["processes"]  # one process, left out: the spec reads as it always did
        for key, items in (("artifacts", self.artifacts), ("includes", self.includes)):
            if items:
                data[key] = [item.to_dict() for item in items]
            else:
                del data[key]  # none: the spec reads as one without them always did
        return data

    def code_listing(self) -> list[dict[str, str]]:
        """The cell and each included file by path and sha256: what the code digest covers."""
        return code_listing(self.code_sha256, self.includes)

    @property
    def code_listing_sha256(self) -> str:
        return code_listing_digest(self.code_listing())

    @property
    def epochs(self) -> int:
        value = self.params.get("epochs", 1)
        return value if isinstance(value, int) and not isinstance(value, bool) else 1


def code_digest(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def parse_jobspec(data: Any) -> JobSpec:
    obj = _object(data, "job spec", {
        "version", "job_id", "researcher_key_id", "created", "nonce", "code", "code_sha256",
        "dataset", "fields", "budget", "output_policy", "params", "cell_first_line", "artifacts", "includes",
        "processes"})
    if obj.get("version") != JOBSPEC_VERSION:
        raise BadInput(f"job spec version must be {JOBSPEC_VERSION}", hint="upgrade jupyter-rapha")
    code = _str(obj, "code", MAX_CODE_BYTES)
    spec = JobSpec(
        version=JOBSPEC_VERSION,
        job_id=_match(obj, "job_id", _JOB_ID, "32 lowercase hex digits"),
        researcher_key_id=_match(obj, "researcher_key_id", _JOB_ID, "32 lowercase hex digits"),
        created=_match(obj, "created", _TIME, "UTC time like 2026-01-31T12:00:00Z"),
        nonce=_match(obj, "nonce", _JOB_ID, "32 lowercase hex digits"),
        code=code,
        code_sha256=_str(obj, "code_sha256", 64),
        dataset=_match(obj, "dataset", _NAME, "a dataset name of letters, digits, '.', '_' or '-'"),
        fields=tuple(_names(obj.get("fields"), "fields")),
        budget=_budget(obj.get("budget")),
        output_policy=_output_policy(obj.get("output_policy", {})),
        params=_params(obj.get("params", {})),
        cell_first_line=_int(obj, "cell_first_line", 1, MAX_CELL_FIRST_LINE, 1),
        artifacts=parse_artifacts(obj.get("artifacts", [])),
        includes=parse_includes(obj.get("includes", [])),
        processes=_int(obj, "processes", 1, MAX_JOB_PROCESSES, 1),
    )
    if code_digest(code) != spec.code_sha256:
        raise BadInput("code_sha256 does not match the code", hint="the cell changed after it was hashed")
    return spec


def _object(data: Any, what: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BadInput(f"{what} must be a JSON object")
    unknown = set(data) - allowed
    if unknown:
        # names shortened: the message goes back to whoever sent them, maybe megabytes long
        names = sorted(str(key)[:40] for key in unknown)
        raise BadInput(f"{what} has unknown keys: {', '.join(names[:8])}{' …' if len(names) > 8 else ''}")
    return data


def _str(obj: dict[str, Any], key: str, max_len: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise BadInput(f"'{key}' must be a non-empty string")
    if len(value) > max_len or len(_utf8(value, key)) > max_len:
        raise BadInput(f"'{key}' is longer than {max_len} bytes")
    return value


def _utf8(value: str, key: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, which json.loads lets through
        raise BadInput(f"'{key}' is not valid Unicode text") from exc


def _match(obj: dict[str, Any], key: str, pattern: re.Pattern[str], what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):  # match's "$" allows a final newline
        raise BadInput(f"'{key}' must be {what}")
    return value


def _int(obj: dict[str, Any], key: str, low: int, high: int, default: int | None = None) -> int:
    value = obj.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadInput(f"'{key}' must be a whole number from {low} to {high}")
    return value


def _names(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and _NAME.fullmatch(v) for v in value):
        raise BadInput(f"'{key}' must be a list of names")
    if len(set(value)) != len(value):
        raise BadInput(f"'{key}' names a field twice")
    return list(value)


def _budget(data: Any) -> Budget:
    obj = _object(data, "budget", {"max_records", "max_seconds"})
    return Budget(
        max_records=_int(obj, "max_records", 1, 10_000_000),
        max_seconds=_int(obj, "max_seconds", 1, 7 * 24 * 3600, default=3600),
    )


def _output_policy(data: Any) -> OutputPolicy:
    obj = _object(data, "output_policy", {"max_weights_bytes", "metric_names", "max_metric_points"})
    default = OutputPolicy()
    return OutputPolicy(
        max_weights_bytes=_int(obj, "max_weights_bytes", 1, OUTPUT_LIMITS.weights_bytes, default.max_weights_bytes),
        metric_names=_metric_names(obj.get("metric_names", [])),
        max_metric_points=_int(obj, "max_metric_points", 1, OUTPUT_LIMITS.metric_points, default.max_metric_points),
    )


def _metric_names(value: Any) -> tuple[str, ...]:
    """Declared names, by the release check's own rule: a name it would refuse is refused
    here, at submission, before the job spends any budget."""
    if not isinstance(value, list) or len(value) > OUTPUT_LIMITS.metric_names:
        raise BadInput(f"'metric_names' must be a list of at most {OUTPUT_LIMITS.metric_names} names")
    for name in value:
        refusal = metric_name_refusal(name)
        if refusal is not None:
            raise BadInput(refusal)
    if len(set(value)) != len(value):
        raise BadInput("'metric_names' names a metric twice")
    return tuple(value)


def _params(data: Any) -> dict[str, ParamValue]:
    if not isinstance(data, dict) or len(data) > 64:
        raise BadInput("'params' must be an object of at most 64 entries")
    for key, value in data.items():
        if not isinstance(key, str) or not _NAME.fullmatch(key):
            raise BadInput("a param name must be letters, digits, '.', '_' or '-' (at most 64)")
        _param_value(key, value)
    return dict(data)


def _param_value(key: str, value: Any) -> None:
    if not isinstance(value, (str, int, float, bool)):
        raise BadInput(f"param '{key}' must hold a string, number or boolean")
    if isinstance(value, str):
        _utf8(value, f"param {key}")
        if len(value) > 1024:
            raise BadInput(f"param '{key}' is longer than 1024 characters")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadInput(f"param '{key}' must be a finite number")
    if isinstance(value, int) and abs(value) > MAX_EXACT_INT:
        raise BadInput(f"param '{key}' is beyond 2**53; send it as a string")
