"""One training run, remote or local, shared by the cell magic and ``rapha run``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from .client import EdgeClient, final_error, make_jobspec, require_finished, upload_artifacts
from .local import make_runtime, run_local
from .local_includes import included_modules
from .protocol.contract import JobState
from .protocol.errors import BadInput, Fault, VerificationError
from .protocol.jobspec import MAX_JOB_PROCESSES
from .protocol.keys import load_public_key
from .inputs import Artifact
from .protocol.job_inputs import IncludedFile
from .result import TrainResult, load_state_dict
from .verify import verify_document

if TYPE_CHECKING:
    from .gateway import Gateway
    from .routing.submission import Submission

WAIT_MARGIN_SECONDS = 300  # queueing, gates and the receipt on top of the job's own budget


@dataclass
class TrainRequest:
    code: str
    dataset: str
    budget: int
    epochs: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    fields: list[str] | None = None
    max_seconds: int = 3600
    # The editor's number of the cell's first line: 2 under %%rapha_train, 1 for a cell
    # file. Carried in the job spec so that every surface numbers lines as the editor does.
    cell_first_line: int = 1
    # --artifact (checked files, see inputs.py) and --include (files that travel with the cell)
    artifacts: list[Artifact] = field(default_factory=list)
    includes: tuple[IncludedFile, ...] = ()
    # --processes: ranks of one torch.distributed group under one sandbox at the edge
    processes: int = 1

    def __post_init__(self) -> None:
        check_processes(self.processes)

    def job_params(self) -> dict[str, Any]:
        if "epochs" in self.params and self.params["epochs"] != self.epochs:
            raise BadInput("give the epochs once: --epochs or --param epochs=..., not both")
        return {**self.params, "epochs": self.epochs}


def check_processes(processes: Any) -> int:
    """--processes, refused here, before anything is signed, when the spec would refuse it."""
    if isinstance(processes, bool) or not isinstance(processes, int) or not 1 <= processes <= MAX_JOB_PROCESSES:
        raise BadInput(f"--processes must be a whole number from 1 to {MAX_JOB_PROCESSES}, not {processes!r}",
                       hint="the edge's own limit (sandbox.max_processes) is usually lower; 1 is one process")
    return processes


def parse_params(items: list[str] | None) -> dict[str, str | int | float | bool]:
    """``k=v`` pairs; values become bool, int or float where they read as one."""
    params: dict[str, str | int | float | bool] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise BadInput(f"--param {item!r} must look like name=value")
        params[key.strip()] = _param_value(text.strip())
    return params


def _param_value(text: str) -> str | int | float | bool:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def chain_rpc_url(edge_url: str, info: dict[str, Any]) -> str | None:
    """The edge's chain endpoint: a path such as ``/chain`` is served by the edge itself."""
    rpc = str((info.get("chain") or {}).get("rpc") or "")
    if not rpc:
        return None
    if rpc.startswith(("http://", "https://")):
        return rpc
    if rpc.startswith("/"):
        return edge_url.rstrip("/") + rpc
    raise Fault(f"edge {edge_url} names a chain endpoint {rpc!r} that is neither a URL nor a path")


def dataset_fields(client: EdgeClient, dataset: str) -> list[str]:
    schema = client.dataset(dataset).get("schema") or {}
    if not schema:
        raise Fault(f"edge {client.url} lists dataset {dataset!r} without a schema")
    return list(schema)


def train_remote(client: EdgeClient, request: TrainRequest,
                 on_status: Callable[[dict[str, Any]], None] | None = None,
                 poll: float = 0.5) -> tuple[TrainResult, dict[str, Any]]:
    """Submit, wait, fetch and verify. Raises the matching error on denial or failure.
    Returns the result and the edge's self-description (for its public key)."""
    info = client.edge_info()
    edge_key = load_public_key(str(info.get("public_key", "")))
    fields = request.fields or dataset_fields(client, request.dataset)
    artifacts = upload_artifacts(client, tuple(a.to_dict() for a in request.artifacts))
    spec = make_jobspec(request.code, request.dataset, fields, request.budget, request.max_seconds,
                        request.job_params(), client.key.key_id, cell_first_line=request.cell_first_line,
                        artifacts=artifacts, includes=request.includes, processes=request.processes)
    job_id = client.submit(spec)
    status = client.wait(job_id, poll=poll, timeout=request.max_seconds + WAIT_MARGIN_SECONDS,
                         on_status=on_status)
    error = final_error(status)
    if error is not None:
        raise error
    return fetch_outputs(client, job_id, info, edge_key), info


def fetch_outputs(client: EdgeClient, job_id: str, info: dict[str, Any], edge_key: Any) -> TrainResult:
    """Weights, metrics and the receipt of a completed job, verified against ``edge_key``.
    Called again later for a receipt released with its anchor pending (``rapha fetch``)."""
    weights, metrics, receipt = client.weights(job_id), client.metrics(job_id), client.receipt(job_id)
    verification = verify_document(receipt, edge_key, weights=weights, metrics=metrics,
                                   rpc_url=chain_rpc_url(client.url, info))
    return TrainResult(job_id=job_id, state_dict=load_state_dict(weights), weights_bytes=weights,
                       metrics=metrics, receipt=receipt, verification=verification, edge_url=client.url,
                       extra={"edge_public_key": edge_key.to_text()})


def fetch_job(client: EdgeClient, job_id: str, pinned_key: Any = None) -> TrainResult:
    """A finished job's outputs, fetched again (``rapha fetch``). With ``pinned_key`` (the
    edge.pub saved by the first fetch) an edge presenting another key is refused: the
    receipt is only worth what the key that checks it is worth."""
    info = client.edge_info()
    presented = load_public_key(str(info.get("public_key", "")))
    if pinned_key is not None and presented.to_text() != pinned_key.to_text():
        raise VerificationError(f"edge {client.url} now presents a key other than the saved edge.pub",
                                hint="if the hospital rotated its key, check the new one with them first")
    status = client.status(job_id)  # a unique prefix is resolved by the edge, among this researcher's jobs
    job_id = str(status.get("job_id") or job_id)
    require_finished(status, BadInput(f"job {job_id} is still {status.get('state')}; fetch it once it has finished"))
    return fetch_outputs(client, job_id, info, pinned_key or presented)


def train_local(request: TrainRequest, namespace: dict[str, Any], schema: dict[str, Any],
                seed: int = 0, on_log: Callable[[dict[str, float], int], None] | None = None) -> TrainResult:
    """The dry run here; ``on_log`` is told each ``rapha.log`` call as it happens (the live chart)."""
    runtime = make_runtime(schema, request.fields, request.budget, request.job_params(),
                           request.epochs, seed=seed)
    runtime.artifacts = {a.name: a.path for a in request.artifacts}
    runtime.on_log = on_log
    with included_modules(request.includes):  # importable under the names the edge gives them
        outcome = run_local(request.code, namespace, runtime, first_line=request.cell_first_line)
    return TrainResult(job_id="local", state_dict=load_state_dict(outcome.weights),
                       weights_bytes=outcome.weights, metrics=outcome.metrics, receipt=None,
                       verification=None, local=True,
                       extra={"records_used": outcome.records_used, "cohort_size": outcome.cohort_size})


def submission_for(request: TrainRequest, site: str | None = None, all_sites: bool = False) -> Submission:
    """The extension's submission for a cell: same fields, budget and params as ``rapha run``."""
    from .routing.submission import Submission

    params = {k: v for k, v in request.job_params().items() if k != "epochs"}
    return Submission(dataset=request.dataset, code=request.code, budget=request.budget, epochs=request.epochs,
                      params=params, fields=tuple(request.fields) if request.fields else None,
                      max_seconds=request.max_seconds, site=site, all_sites=all_sites,
                      cell_first_line=request.cell_first_line,
                      artifacts=tuple(a.to_dict() for a in request.artifacts), includes=request.includes,
                      processes=request.processes)


def collect(gateway: Gateway, job_id: str, on_event: Callable[[dict[str, Any]], None] | None = None,
            after: int = 0) -> TrainResult:
    """Follow a job's events to its end, then fetch and verify its outputs. Works for a job
    submitted by this kernel, another kernel, or before a restart (``%rapha_attach``)."""
    state = ""
    for event in gateway.follow(job_id, after):
        if on_event is not None:
            on_event(event)
        raw = event.get("data")
        data = raw if isinstance(raw, dict) else {}
        state = str(data.get("state", state)) if event.get("kind") == "state" else state
        if state == JobState.HELD and data.get("review_needed"):
            break  # an output checker decides, maybe days from now: %rapha_attach follows it again
        if state == JobState.AWAITING_APPROVAL:
            break  # a data steward decides before it runs: the same
    error = final_error(gateway.status(job_id))
    if error is not None:
        raise error
    edge = gateway.job_edge(job_id)  # the PINNED key of the job's edge, not whatever it says now
    weights, metrics, receipt = (gateway.output(job_id, w) for w in ("weights", "metrics", "receipt"))
    verification = verify_document(receipt, load_public_key(edge["public_key"]), weights=weights, metrics=metrics,
                                   rpc_url=edge.get("chain_rpc"))
    return TrainResult(job_id=job_id, state_dict=load_state_dict(weights), weights_bytes=weights, metrics=metrics,
                       receipt=receipt, verification=verification, edge_url=str(edge.get("url", "")),
                       extra={"edge_public_key": edge["public_key"], "site": edge.get("site", "")})
