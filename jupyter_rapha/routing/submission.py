"""What a researcher asks for when submitting a job, checked before anything is signed.

Every refusal says which field to fix, so a notebook can show it as is (400).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..protocol.errors import BadInput
from ..protocol.jobspec import MAX_JOB_PROCESSES
from ..protocol.job_inputs import ARTIFACT_NAME, MAX_ARTIFACTS, IncludedFile, parse_includes

_KEYS = {"dataset", "code", "budget", "epochs", "params", "fields", "max_seconds", "site", "sites", "cell_first_line",
         "artifacts", "includes", "processes"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_CODE_CHARS = 1_000_000


@dataclass(frozen=True)
class Submission:
    dataset: str
    code: str
    budget: int
    epochs: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    fields: tuple[str, ...] | None = None
    max_seconds: int = 3600
    site: str | None = None
    all_sites: bool = False
    cell_first_line: int = 1  # the editor's number of the code's first line (2 under %%rapha_train)
    # {"name", "path", "sha256", "bytes"}: checked by the caller (inputs.check_artifact); the
    # proxy uploads the file and refuses it if it no longer has that digest
    artifacts: tuple[dict[str, Any], ...] = ()
    includes: tuple[IncludedFile, ...] = ()
    processes: int = 1  # ranks of one torch.distributed group under one sandbox

    def job_params(self) -> dict[str, Any]:
        return {**self.params, "epochs": self.epochs}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"dataset": self.dataset, "code": self.code, "budget": self.budget,
                                "epochs": self.epochs, "params": self.params, "max_seconds": self.max_seconds}
        if self.fields is not None:
            body["fields"] = list(self.fields)
        if self.site:
            body["site"] = self.site
        if self.all_sites:
            body["sites"] = "all"
        if self.cell_first_line != 1:
            body["cell_first_line"] = self.cell_first_line
        if self.artifacts:
            body["artifacts"] = [dict(a) for a in self.artifacts]
        if self.includes:
            body["includes"] = [f.to_dict() for f in self.includes]
        if self.processes != 1:
            body["processes"] = self.processes
        return body


def parse_submission(body: Any) -> Submission:
    if not isinstance(body, dict):
        raise BadInput("the request body must be a JSON object with dataset, code and budget")
    unknown = sorted(set(body) - _KEYS)
    if unknown:
        raise BadInput(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_KEYS))}")
    sites = body.get("sites")
    if sites not in (None, "all"):
        raise BadInput("sites may only be \"all\" (one job per offering edge); use site=NAME for one edge")
    if sites == "all" and body.get("site"):
        raise BadInput("give either site=NAME or sites=\"all\", not both")
    return Submission(
        dataset=_text(body, "dataset", 64), code=_text(body, "code", MAX_CODE_CHARS),
        budget=_count(body, "budget", None, 1), epochs=_count(body, "epochs", 1, 1),
        params=_params(body.get("params", {})), fields=_fields(body.get("fields")),
        max_seconds=_count(body, "max_seconds", 3600, 1), site=_site(body.get("site")), all_sites=sites == "all",
        cell_first_line=_count(body, "cell_first_line", 1, 1),
        artifacts=_artifacts(body.get("artifacts", [])), includes=parse_includes(body.get("includes", [])),
        processes=_processes(body.get("processes", 1)))


def _processes(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_JOB_PROCESSES:
        raise BadInput(f"processes must be a whole number from 1 to {MAX_JOB_PROCESSES}")
    return value


def _artifacts(value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list) or len(value) > MAX_ARTIFACTS:
        raise BadInput(f"artifacts must be a list of at most {MAX_ARTIFACTS} entries")
    for item in value:
        if not (isinstance(item, dict) and set(item) == {"name", "path", "sha256", "bytes"}
                and isinstance(item["name"], str) and ARTIFACT_NAME.fullmatch(item["name"])
                and isinstance(item["path"], str) and item["path"]
                and isinstance(item["sha256"], str) and _SHA256.fullmatch(item["sha256"])
                and isinstance(item["bytes"], int) and not isinstance(item["bytes"], bool) and item["bytes"] > 0):
            raise BadInput("an artifact must be {name, path, sha256, bytes} as the notebook checked it")
    names = [item["name"] for item in value]
    if len(set(names)) != len(names):
        raise BadInput("artifacts name an artifact twice")
    return tuple(dict(item) for item in value)


def _text(body: dict[str, Any], name: str, limit: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{name} is required and must be a non-empty string")
    if len(value) > limit:
        raise BadInput(f"{name} is longer than {limit} characters")
    return value


def _count(body: dict[str, Any], name: str, default: int | None, minimum: int) -> int:
    value = body.get(name, default)
    if value is None:
        raise BadInput(f"{name} is required: a whole number of at least {minimum}")
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise BadInput(f"{name} must be a whole number of at least {minimum}, not {value!r}")
    return value


def _params(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadInput("params must be an object of name: value")
    for name, item in value.items():
        if not isinstance(item, (str, int, float, bool)):
            raise BadInput(f"params.{name} must be a string, number or boolean")
    if "epochs" in value:
        raise BadInput("give epochs as the top-level epochs field, not in params")
    return dict(value)


def _fields(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(f, str) and f for f in value):
        raise BadInput("fields must be a non-empty list of field names (or left out for the whole schema)")
    return tuple(value)


def _site(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BadInput("site must be the name of a configured edge")
    return value
