"""HTTP client for one edge (the v1 API of docs/internals.md).

Every request is signed with the researcher's key over method, path with query, a
timestamp, a fresh nonce and the body's digest (S8), so an edge can refuse anything not
from a registered researcher and any replay. Failures are wrapped once, here, into the
project's error tree: the caller sees ``GateDenied`` when the hospital said no and
``Fault`` when something broke, never a ``requests`` exception.
"""

from __future__ import annotations

import os
import sys
import re
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from collections.abc import Callable
from urllib.parse import urlsplit

import requests

from .inputs import check_format
from .protocol.cellinfo import logged_metric_names
from .protocol.contract import TERMINAL_STATES, JobState
from .protocol import bounded, errors
from .protocol.canonical import canonical_json
from .protocol.jobspec import Budget, JobSpec, OutputPolicy, ParamValue, code_digest
from .protocol.keys import PrivateKey
from .protocol.job_inputs import ArtifactEntry, IncludedFile
from .protocol.request import sign_request, sign_request_digest

_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
UNKNOWN_KEY_HINT = "send your public key (`rapha keygen --show` prints it) to the hospital to register it"
MIN_JOB_PREFIX = 8  # the short ids shown in listings and progress lines
FINAL_STATES = TERMINAL_STATES  # the contract's: a held job is not final, its outputs are still to be decided
MAX_WEIGHTS_BYTES = 2**31  # a client-side ceiling; the edge enforces the job's own limit
UPLOAD_MIN_BYTES_PER_S = 1024 * 1024  # an artifact upload's timeout grows with its size
_GATE_CLASSES = (errors.SpecDenied, errors.ScanDenied, errors.PolicyDenied,
                 errors.AttestationDenied, errors.BudgetDenied, errors.ReleaseDenied)
# An error body names its kind by class ("ScanDenied"); a job status names the gate ("scan").
_GATE_ERRORS: dict[str, type[errors.GateDenied]] = {
    **{cls.gate: cls for cls in _GATE_CLASSES}, **{cls.__name__: cls for cls in _GATE_CLASSES}}


class JobFailed(errors.Fault):
    """The job's own code raised. Only the exception type and cell line leave the edge (S5),
    and ``detail`` only when it is one of the ``rapha`` runtime's own fixed messages."""

    where = "at the edge"

    def __init__(self, message: str, *, error_type: str = "", line: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type
        self.line = line
        self.detail = detail


class JobCancelled(errors.NotFound):
    """The job was cancelled (``DELETE /v1/jobs/{id}``) before it released anything."""


class JobHeld(errors.RaphaError):
    """The job ran and its outputs wait at the edge for the hospital's output checkers:
    nothing has been released yet. Not an error of the job: fetch it once it is released."""


class JobAwaitingApproval(JobHeld):
    """The job waits at the edge for the hospital's data stewards to approve it before it
    runs: nothing has run yet. Not an error of the job: fetch it once it has run."""


def held_for_review(status: dict[str, Any]) -> bool:
    """Held, its checks done, and waiting for an output checker (which may take days)."""
    progress = status.get("progress") or {}
    return status.get("state") == JobState.HELD and bool(progress.get("review_needed"))


def waits_for_people(status: dict[str, Any]) -> bool:
    """Held for review, or awaiting a data steward's approval before it runs: either may
    take days, so a caller stops waiting and fetches later."""
    return held_for_review(status) or status.get("state") == JobState.AWAITING_APPROVAL


class EdgeClient:
    def __init__(self, url: str, key: PrivateKey, timeout: float = 30) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise errors.BadInput(f"edge URL {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self._base_path = parts.path.rstrip("/")
        self.key = key
        self.timeout = timeout
        self._session = requests.Session()
        # An edge with a certificate from the hospital's own CA: trust exactly that bundle
        # (passed per request, because requests lets REQUESTS_CA_BUNDLE override a session's).
        self._verify: str | bool = os.environ.get("RAPHA_CA_BUNDLE") or True

    # -- API -------------------------------------------------------------------------
    def edge_info(self) -> dict[str, Any]:
        return self._json("GET", "/v1/edge")

    def datasets(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/datasets").get("datasets", []))

    def dataset(self, name: str) -> dict[str, Any]:
        for entry in self.datasets():
            if entry.get("name") == name:
                return entry
        raise errors.NotFound(f"edge {self.url} offers no dataset named {name!r}")

    def submit(self, spec: JobSpec) -> str:
        self.lock_escrow(spec)
        body = canonical_json({"spec": spec.to_dict()})
        answer = self._json("POST", "/v1/jobs", body)
        job_id = answer.get("job_id")
        if not isinstance(job_id, str):
            raise errors.Fault(f"edge {self.url} answered the submission without a job id")
        return job_id

    def lock_escrow(self, spec: JobSpec) -> Any:
        """Where the edge settles the job's dataset on chain: lock its maximum cost for
        the job first (``escrow_client``), printing what was locked. An edge that does not
        say how it settles is left to refuse the job itself."""
        from .escrow_client import lock_for_job
        from .keystore import chain_key_of
        from .protocol.chain_account import load_chain_account

        try:
            info = self.edge_info()
        except errors.RaphaError:
            return None
        if not isinstance(info.get("settlement"), dict):
            return None
        offer = self.dataset(spec.dataset)
        path = chain_key_of(self.key)
        account = load_chain_account(path) if path.exists() else None
        lock = lock_for_job(self.url, info, offer, account, spec.job_id, spec.budget.max_records,
                            spec.budget.max_seconds, verify=self._verify)
        if lock is not None:
            print(lock.line(), file=sys.stderr)
        return lock

    def upload_artifact(self, path: str, sha256: str, size: int) -> dict[str, Any]:
        """Stream the file at ``path`` to ``PUT /v1/artifacts/{sha256}``. The request is
        signed over ``sha256``, the digest the file had when it was checked: a file that
        changed since is refused by the edge, and never named by a job."""
        route = f"/v1/artifacts/{sha256}"
        headers = {"Authorization": sign_request_digest(self.key, "PUT", self._base_path + route, sha256,
                                                        int(time.time())),
                   "Content-Type": "application/octet-stream", "Content-Length": str(size)}
        try:
            with open(path, "rb") as body:
                response = self._session.put(self.url + route, data=body, headers=headers,
                                             timeout=max(self.timeout, size / UPLOAD_MIN_BYTES_PER_S),
                                             verify=self._verify)
            content = _read_bounded(response, 64 * 1024, self.url)
        except OSError as exc:
            raise errors.BadInput(f"cannot read the artifact file {path}") from exc
        except requests.RequestException as exc:
            raise errors.Fault(f"cannot upload the artifact to the edge at {self.url}: {_reason(exc)}") from exc
        if response.status_code >= 400:
            raise self._refusal(response.status_code, content)
        return dict(bounded.loads(content, what="the edge's answer to an artifact upload"))

    def status(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", _job_route(job_id))

    def jobs(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/jobs").get("jobs", []))

    def catalog(self) -> dict[str, Any]:
        """The signed catalog as served; check it with ``jupyter_rapha.catalog`` before use."""
        return self._json("GET", "/v1/catalog")

    def policy(self) -> dict[str, Any]:
        """The signed published policy; check it with ``routing.catalogs.verify_policy``."""
        return self._json("GET", "/v1/policy")

    def events(self, job_id: str, after: int = 0) -> dict[str, Any]:
        """``{"state", "events": [{"seq", "ts", "kind", "data"}]}`` with seq above ``after``."""
        if not isinstance(after, int) or after < 0:
            raise errors.BadInput("after must be a whole number")
        return self._json("GET", _job_route(job_id, f"/events?after={after}"))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("DELETE", _job_route(job_id))

    def receipt(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", _job_route(job_id, "/receipt"))

    def metrics(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", _job_route(job_id, "/metrics"))

    def weights(self, job_id: str) -> bytes:
        return self._request("GET", _job_route(job_id, "/weights"), max_bytes=MAX_WEIGHTS_BYTES)

    def wait(self, job_id: str, poll: float = 0.5, timeout: float | None = None,
             on_status: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the job reaches a final state or waits for people (an output checker,
        or a data steward's approval before it runs);
        ``on_status`` sees every change. The time a job is held while its disclosure checks
        run does not count against ``timeout`` (the edge bounds the checks itself)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while True:
            status = self.status(job_id)
            if status != last and on_status is not None:
                on_status(status)
            last = status
            if status.get("state") in FINAL_STATES or waits_for_people(status):
                return status
            if deadline is not None and status.get("state") == JobState.HELD:
                deadline = max(deadline, time.monotonic() + poll)
            elif deadline is not None and time.monotonic() >= deadline:
                raise errors.Fault(f"job {job_id} at {self.url} still {status.get('state')!r} after {timeout:g} s")
            time.sleep(poll)

    # -- transport -------------------------------------------------------------------
    def _json(self, method: str, route: str, body: bytes = b"") -> dict[str, Any]:
        content = self._request(method, route, body)
        try:
            value = bounded.loads(content, what=f"the answer of edge {self.url} to {route}")
        except errors.BadInput as exc:  # an answer we cannot read is the edge's fault, not the caller's input
            raise errors.Fault(f"edge {self.url} answered {route} with something that is not JSON",
                               hint=exc.message) from exc
        if not isinstance(value, dict):
            raise errors.Fault(f"edge {self.url} answered {route} with JSON that is not an object")
        return value

    def _request(self, method: str, route: str, body: bytes = b"", max_bytes: int = 64 * 2**20) -> bytes:
        path = self._base_path + route
        headers = {"Authorization": sign_request(self.key, method, path, body, int(time.time()))}
        if body:
            headers["Content-Type"] = "application/json"
        try:
            response = self._session.request(method, self.url + route, data=body or None, headers=headers,
                                             timeout=self.timeout, stream=True, verify=self._verify)
            content = _read_bounded(response, max_bytes, self.url)
        except requests.RequestException as exc:
            raise errors.Fault(f"cannot reach the edge at {self.url}: {_reason(exc)}",
                               hint="check the URL and that the edge is running") from exc
        if response.status_code >= 400:
            raise self._refusal(response.status_code, content)
        return content

    def _refusal(self, status: int, content: bytes) -> errors.RaphaError:
        error = error_from_response(status, content, f"edge {self.url}")
        if isinstance(error, errors.UnknownKey):
            return errors.UnknownKey(f"edge {self.url} does not know your key {self.key.key_id}",
                                     hint=UNKNOWN_KEY_HINT)
        return error


def check_job_ref(job_id: str) -> str:
    """A job id, or a prefix of one (MIN_JOB_PREFIX characters or more) that the edge
    resolves among the caller's own jobs. It goes into a signed path: refuse anything
    that could re-aim the request."""
    if not _JOB_ID.match(job_id):
        raise errors.BadInput(f"{job_id!r} is not a job id")
    if len(job_id) < MIN_JOB_PREFIX:
        raise errors.BadInput(f"job id {job_id!r} is too short: give at least {MIN_JOB_PREFIX} of its characters")
    return job_id


def _job_route(job_id: str, suffix: str = "") -> str:
    return f"/v1/jobs/{check_job_ref(job_id)}{suffix}"


def _read_bounded(response: requests.Response, max_bytes: int, url: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            response.close()
            raise errors.Fault(f"edge {url} answered more than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection refused or host unreachable"
    return type(exc).__name__


def error_from_response(status: int, content: bytes, source: str) -> errors.RaphaError:
    """Turn an error answer from ``source`` ("edge https://…", "the Jupyter server") into
    the matching error class (400/401/403/404/5xx; 413, too large, is bad input too)."""
    kind, said, reasons = _error_body(content)
    message = said or f"{source} answered HTTP {status}"
    if status in (400, 413):
        return errors.BadInput(message)
    if status == 401:
        cls = errors.UnknownKey if kind == "UnknownKey" else errors.AuthError
        return cls(message, hint=UNKNOWN_KEY_HINT if cls is errors.UnknownKey else "is your public key registered "
                   "at this edge, and is this machine's clock right?")
    if status == 403:
        return _GATE_ERRORS.get(kind, errors.GateDenied)(message, reasons=reasons or None)
    if status == 404:
        return errors.NotFound(message)
    if status >= 500:
        return errors.Fault(f"{source} failed: {said}" if said else message)
    return errors.Fault(f"{source} answered HTTP {status}: {said}" if said else message)


def _error_body(content: bytes) -> tuple[str, str, list[str]]:
    try:
        error = bounded.loads(content, what="error answer").get("error", {})
        reasons = [str(r)[:1000] for r in error.get("reasons", []) or []][:100]
        return str(error.get("kind", ""))[:100], str(error.get("message", ""))[:4000], reasons
    except (errors.BadInput, AttributeError, TypeError):
        return "", "", []


def require_finished(status: dict[str, Any], not_yet: errors.RaphaError) -> None:
    """Raise ``not_yet`` while the job runs, and the job's own refusal or failure once it
    has ended other than completed."""
    if waits_for_people(status):
        raise final_error(status) or not_yet  # JobHeld: waiting for the hospital's checkers or stewards
    if status.get("state") not in FINAL_STATES:
        raise not_yet
    error = final_error(status)
    if error is not None:
        raise error


def final_error(status: dict[str, Any]) -> errors.RaphaError | None:
    """The error a final job status stands for, or None when it completed."""
    state = status.get("state")
    if state == JobState.COMPLETED:
        return None
    if held_for_review(status):
        progress = status.get("progress") or {}
        return JobHeld(f"job {status.get('job_id')} ran; its outputs are held at the edge for review by the "
                       f"hospital's output checkers ({int(progress.get('approvals', 0))} of "
                       f"{int(progress.get('approvals_needed', 1))} approvals). Nothing has been released yet",
                       hint=f"rapha fetch {str(status.get('job_id'))[:12]} once it is released; a refusal "
                            "comes with the checker's reason")
    if state == JobState.AWAITING_APPROVAL:
        progress = status.get("progress") or {}
        return JobAwaitingApproval(
            f"job {status.get('job_id')} waits at the edge for the hospital's data stewards to approve it before "
            f"it runs ({int(progress.get('approvals', 0))} of {int(progress.get('approvals_needed', 1))} "
            "approvals). Nothing has run yet",
            hint=f"rapha fetch {str(status.get('job_id'))[:12]} once it has run; a reject comes with the "
                 "steward's reason")
    if state == JobState.REFUSED:
        reasons = [str(r) for r in status.get("reasons") or []] or ["the edge refused to release the outputs"]
        return errors.ReleaseDenied(f"job {status.get('job_id')} ran, but the edge refused to release its outputs",
                                    reasons=reasons)
    if state == JobState.DENIED:
        reasons = [str(r) for r in status.get("reasons") or []] or ["the edge denied the job"]
        gate = next((g.get("name") for g in status.get("gates", []) if g.get("outcome") == "deny"), "")
        cls = _GATE_ERRORS.get(str(gate), errors.GateDenied)
        return cls(f"job {status.get('job_id')} denied" + (f" by the {gate} gate" if gate else ""), reasons=reasons)
    if state == JobState.CANCELLED:
        return JobCancelled(f"job {status.get('job_id')} was cancelled before it finished; nothing was released")
    error = status.get("error") or {}
    if error.get("type"):
        where = f" at line {error['line']} of the cell" if error.get("line") else ""
        detail = str(error.get("message") or "")
        return JobFailed(f"{error['type']}{where}" + (f": {detail}" if detail else ""), error_type=str(error["type"]),
                         line=error.get("line"), detail=detail)
    return errors.Fault(f"job {status.get('job_id')} ended {state!r}" + _reasons_text(status))


def _reasons_text(status: dict[str, Any]) -> str:
    reasons = status.get("reasons") or []
    return (": " + "; ".join(str(r) for r in reasons)) if reasons else ""


def utc_now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def upload_artifacts(client: EdgeClient, artifacts: tuple[dict[str, Any], ...]) -> tuple[ArtifactEntry, ...]:
    """Upload each artifact as it was checked; the job spec names exactly those digests."""
    entries = []
    for item in artifacts:
        check_format(item["name"], item["path"], item["bytes"])
        answer = client.upload_artifact(item["path"], item["sha256"], item["bytes"])
        if answer.get("sha256") != item["sha256"] or answer.get("bytes") != item["bytes"]:
            raise errors.Fault(f"edge {client.url} took artifact {item['name']!r} as other bytes than were sent")
        entries.append(ArtifactEntry(item["name"], item["sha256"], item["bytes"]))
    return tuple(entries)


def _logged_names(code: str, includes: tuple[IncludedFile, ...]) -> tuple[str, ...]:
    """The metric names ``rapha.log`` is called with, in the cell and in the files it includes."""
    names = dict.fromkeys(logged_metric_names(code))
    for item in includes:
        names.update(dict.fromkeys(logged_metric_names(item.code)))
    return tuple(names)


def make_jobspec(code: str, dataset: str, fields: list[str] | tuple[str, ...], max_records: int,
                 max_seconds: int, params: dict[str, ParamValue], key_id: str,
                 output_policy: OutputPolicy | None = None, cell_first_line: int = 1,
                 artifacts: tuple[ArtifactEntry, ...] = (), includes: tuple[IncludedFile, ...] = (),
                 processes: int = 1) -> JobSpec:
    """A fresh job spec: new job id and nonce, created now (UTC). ``cell_first_line``: the
    editor's number of the code's first line (2 under %%rapha_train)."""
    return JobSpec(
        job_id=uuid.uuid4().hex, researcher_key_id=key_id, created=utc_now_text(),
        nonce=secrets.token_hex(16), code=code, code_sha256=code_digest(code), dataset=dataset,
        fields=tuple(fields), budget=Budget(max_records=max_records, max_seconds=max_seconds),
        output_policy=output_policy or OutputPolicy(metric_names=_logged_names(code, includes)), params=dict(params),
        cell_first_line=cell_first_line, artifacts=tuple(artifacts), includes=tuple(includes),
        processes=processes,
    )
