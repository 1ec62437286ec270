"""A small stand-in edge for the researcher-side tests.

It implements the v1 HTTP API of docs/internals.md on 127.0.0.1: signed-request checks
with a nonce store, the catalog, jobs that run the cell with the local dry-run runtime
(so the weights are real), receipts signed with the protocol's ``sign_receipt`` and
anchored on the real embedded dev chain, served at ``POST /chain``. Scenarios are picked
by the cell's text: ``import socket`` is denied by the scan gate; an exception fails the
job with its type and cell line. ``anchor_pending = True`` releases receipts with their
anchor pending (the edge's chain down) until ``anchor_pending_receipts()``. The real edge
is covered by the end-to-end tests.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edge_kernel.anchor.account import create_chain_account, load_chain_account
from edge_kernel.anchor.devchain import EmbeddedChain
from edge_kernel.catalog import attestation_offer, sign_catalog
from jupyter_rapha.local import CellFailed, make_runtime, run_local
from jupyter_rapha.protocol import errors
from jupyter_rapha.protocol.anchor_proof import pending_anchor
from jupyter_rapha.protocol.jobspec import parse_jobspec
from jupyter_rapha.protocol.keys import PrivateKey, PublicKey
from jupyter_rapha.protocol.receipt import envelope_digest, metrics_digest, sha256_hex, sign_receipt
from jupyter_rapha.protocol.request import parse_authorization, verify_request

SCHEMA = {"image": {"dtype": "float32", "shape": [1, 32, 32], "kind": "feature"},
          "finding": {"dtype": "int64", "shape": [], "kind": "label"}}
DATASET = {"name": "synthetic-cxr", "version": "1", "schema": SCHEMA, "price_per_record": "0.10",
           "currency": "GBP", "max_records": 200, "cohort_band": "100-1000"}
GATES = ("spec", "scan", "attestation", "airgap", "policy", "release")


class FakeEdge:
    def __init__(self, researchers: list[PublicKey], workdir: Path | None = None) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fake-edge-"))
        self.key = PrivateKey.generate()
        self.researchers = {k.key_id: k for k in researchers}
        self.nonces: set[str] = set()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        create_chain_account(self.workdir / "chain.key")
        self.chain = EmbeddedChain(self.workdir / "chain", load_chain_account(self.workdir / "chain.key"))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.job_delay = 0.0
        self.anchor_pending = False
        self.environment: dict[str, Any] | None = None  # the catalog's listing, when a test sets one

    def __enter__(self) -> FakeEdge:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def info(self) -> dict[str, Any]:
        return {"edge_id": "fake-edge", "public_key": self.key.public.to_text(), "key_id": self.key.key_id,
                "chain": {"chain_id": self.chain.chain_id, "anchor_address": self.chain.address, "rpc": "/chain"},
                "version": "test"}

    def catalog(self) -> dict[str, Any]:
        entry = {**DATASET, "labels": ["finding"], "synthetic_seed": 7, "sensitivity": "synthetic",
                 "description": "", "policy_summary": ["fake edge"]}
        catalog = {"catalog_version": 1, "edge_id": "fake-edge", "key_id": self.key.key_id,
                   "issued": _now(), "datasets": [entry], "attestation": attestation_offer("unsafe_software")}
        if self.environment is not None:
            catalog["environment"] = self.environment
        return sign_catalog(catalog, self.key)

    def anchor_pending_receipts(self) -> int:
        """The chain is back: anchor every receipt released pending, as the edge's outbox does."""
        anchored = 0
        for job in self.jobs.values():
            receipt = json.loads(job["files"].get("receipt", b"null"))
            if receipt and receipt["anchor"].get("status") == "pending":
                digest = envelope_digest(receipt["envelope"])
                receipt["anchor"] = {**self.chain.anchor(bytes.fromhex(digest)), "envelope_sha256": digest}
                job["files"]["receipt"] = json.dumps(receipt).encode()
                anchored += 1
        return anchored

    def events(self, job_id: str, key_id: str, after: int) -> dict[str, Any]:
        job_id = self.resolve(job_id, key_id)
        job = self.job(job_id, key_id)
        return {"job_id": job_id, "state": job["state"], "events": [e for e in job["events"] if e["seq"] > after]}

    # -- auth ------------------------------------------------------------------------
    def authenticate(self, header: str | None, method: str, path: str, body: bytes) -> str:
        auth = parse_authorization(header)
        key = self.researchers.get(auth.key_id)
        if key is None:
            raise errors.UnknownKey("this key is not registered at the edge")
        verify_request(auth, key, method, path, body, int(time.time()))
        with self.lock:
            if auth.nonce in self.nonces:
                raise errors.Replayed("request nonce was seen before")
            self.nonces.add(auth.nonce)
        return auth.key_id

    # -- jobs ------------------------------------------------------------------------
    def submit(self, body: bytes, key_id: str) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise errors.BadInput("request body is not JSON") from exc
        spec = parse_jobspec(data.get("spec") if isinstance(data, dict) else None)
        if spec.researcher_key_id != key_id:
            raise errors.BadInput("spec.researcher_key_id is not the key that signed the request")
        if spec.dataset != DATASET["name"]:
            raise errors.SpecDenied("unknown dataset", reasons=[f"no dataset named {spec.dataset!r} at this edge"])
        with self.lock:
            if spec.job_id not in self.jobs:
                self.jobs[spec.job_id] = {"spec": spec, "owner": key_id, "state": "", "gates": [], "events": [],
                                          "reasons": [], "error": None, "progress": {}, "files": {}}
                _set_state(self.jobs[spec.job_id], "submitted")
                threading.Thread(target=self._run, args=(spec.job_id,), daemon=True).start()
        return {"job_id": spec.job_id, "state": self.jobs[spec.job_id]["state"]}

    def status(self, job_id: str, key_id: str) -> dict[str, Any]:
        job_id = self.resolve(job_id, key_id)
        job = self.job(job_id, key_id)
        return {"job_id": job_id, "state": job["state"], "dataset": job["spec"].dataset, "gates": job["gates"],
                "reasons": job["reasons"], "error": job["error"], "progress": job["progress"],
                "epochs_asked": job["spec"].epochs}  # as the edge's store answers it

    def resolve(self, job_ref: str, key_id: str) -> str:
        """As the edge's store: a unique prefix (8 or more) of one of the caller's own jobs."""
        mine = [j for j, v in self.jobs.items() if v["owner"] == key_id and j.startswith(job_ref)]
        if len(job_ref) < 8 or len(mine) != 1:
            if len(mine) > 1 and len(job_ref) >= 8:
                raise errors.BadInput(f"{len(mine)} of your jobs start with {job_ref}; give more characters of the id")
            raise errors.NotFound(f"no job {job_ref}")
        return mine[0]

    def job(self, job_id: str, key_id: str) -> dict[str, Any]:
        job_id = self.resolve(job_id, key_id) if job_id not in self.jobs else job_id
        job = self.jobs.get(job_id)
        if job is None or job["owner"] != key_id:
            raise errors.NotFound(f"no job {job_id}")
        return job

    def _run(self, job_id: str) -> None:
        job = self.jobs[job_id]
        spec = job["spec"]
        time.sleep(self.job_delay)
        if "import socket" in spec.code:
            job["gates"] = [_gate("spec", "pass"), _gate("scan", "deny")]
            job["reasons"] = ["line 1: import of 'socket' is not allowed in a job"]
            _set_state(job, "denied")
            return
        _set_state(job, "running")
        started = _now()
        runtime = make_runtime(SCHEMA, list(spec.fields), spec.budget.max_records, spec.params, spec.epochs)
        try:
            # numbered as the real edge numbers them: the editor's lines (the spec's cell_first_line)
            outcome = run_local(spec.code, {"__name__": "__rapha_job__"}, runtime, first_line=spec.cell_first_line)
        except CellFailed as exc:  # the job's own failure: only type and cell line leave
            job["error"] = {"type": exc.error_type, "line": exc.line, "message": None}
        except Exception as exc:
            line = _cell_line(exc)
            job["error"] = {"type": type(exc).__name__, "line": line and line + spec.cell_first_line - 1,
                            "message": None}
        if job["error"] is not None:
            _set_state(job, "failed")
            return
        self._release(job, outcome, started)

    def _release(self, job: dict[str, Any], outcome: Any, started: str) -> None:
        spec = job["spec"]
        gates = [_gate(name, "pass" if name in ("spec", "scan", "release") else "absent") for name in GATES]
        predicate = {
            "receipt_version": 1,
            "job": {"id": spec.job_id, "researcher_key_id": spec.researcher_key_id,
                    "code_sha256": spec.code_sha256, "request_sha256": "0" * 64, "params": spec.params},
            "edge": {"id": "fake-edge", "key_id": self.key.key_id, "chain_id": self.chain.chain_id,
                     "anchor_address": self.chain.address},
            "dataset": {"id": DATASET["name"], "version": "1", "fields": list(spec.fields),
                        "records_used": outcome.records_used, "records_root": "ab" * 32,
                        "cohort_size": outcome.cohort_size, "skipped": {}},
            "budget": {"max_records": spec.budget.max_records, "max_seconds": spec.budget.max_seconds},
            "settlement": {"price_per_record": "0.10", "currency": "GBP", "records": outcome.records_used,
                           "amount": f"{0.1 * outcome.records_used:.2f}"},
            "outputs": {"weights": {"sha256": sha256_hex(outcome.weights), "bytes": len(outcome.weights)},
                        "metrics": {"sha256": metrics_digest(outcome.metrics), "names": sorted(outcome.metrics)}},
            "metrics": outcome.metrics, "gates": gates, "unsafe": ["unsafe_no_airgap"],
            "times": {"started": started, "finished": _now()},
        }
        receipt = sign_receipt(predicate, sha256_hex(outcome.weights), self.key)
        digest = envelope_digest(receipt["envelope"])
        receipt["anchor"] = pending_anchor(digest) if self.anchor_pending else {
            **self.chain.anchor(bytes.fromhex(digest)), "envelope_sha256": digest}
        job["gates"] = gates
        job["files"] = {"weights": outcome.weights, "metrics": json.dumps(outcome.metrics).encode(),
                        "receipt": json.dumps(receipt).encode()}
        _set_state(job, "completed")


def _set_state(job: dict[str, Any], state: str) -> None:
    job["state"] = state
    job["events"].append({"seq": len(job["events"]) + 1, "ts": _now(), "kind": "state", "data": {"state": state}})


def _gate(name: str, outcome: str) -> dict[str, Any]:
    return {"name": name, "outcome": outcome, "evidence_sha256": sha256_hex(f"{name}:{outcome}".encode())}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _cell_line(exc: BaseException) -> int | None:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<cell>"]
    return frames[-1].lineno if frames else None


def _status_of(exc: BaseException) -> int:
    for kind, status in ((errors.BadInput, 400), (errors.AuthError, 401), (errors.GateDenied, 403),
                         (errors.NotFound, 404)):
        if isinstance(exc, kind):
            return status
    return 500


def _handler(edge: FakeEdge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def _answer(self, method: str) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                self._route(method, body)
            except errors.RaphaError as exc:
                error = {"kind": type(exc).__name__, "message": exc.diagnostics()}
                if isinstance(exc, errors.GateDenied):
                    error["reasons"] = exc.reasons
                self._send(_status_of(exc), json.dumps({"error": error}).encode())

        def _route(self, method: str, body: bytes) -> None:
            route, _, query = self.path.partition("?")
            parts = route.strip("/").split("/")
            if method == "GET" and self.path == "/v1/edge":
                return self._json(edge.info())
            if method == "POST" and self.path == "/chain":
                return self._json(edge.chain.rpc(json.loads(body)))
            key_id = edge.authenticate(self.headers.get("Authorization"), method, self.path, body)
            if method == "GET" and self.path == "/v1/datasets":
                return self._json({"datasets": [DATASET]})
            if method == "POST" and self.path == "/v1/jobs":
                return self._json(edge.submit(body, key_id), 202)
            if method == "GET" and self.path == "/v1/jobs":
                mine = [edge.status(j, key_id) for j, v in edge.jobs.items() if v["owner"] == key_id]
                return self._json({"jobs": mine})
            if method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "jobs"]:
                return self._json(edge.status(parts[2], key_id))
            if method == "GET" and self.path == "/v1/catalog":
                return self._json(edge.catalog())
            if method == "GET" and len(parts) == 4 and parts[:2] == ["v1", "jobs"] and parts[3] == "events":
                return self._json(edge.events(parts[2], key_id, int(query.removeprefix("after=") or 0)))
            if method == "GET" and len(parts) == 4 and parts[:2] == ["v1", "jobs"]:
                return self._file(edge.job(parts[2], key_id), parts[3])
            raise errors.NotFound(f"no route {method} {self.path}")

        def _file(self, job: dict[str, Any], what: str) -> None:
            if job["state"] != "completed" or what not in job["files"]:
                raise errors.NotFound(f"job has no {what} (state: {job['state']})")
            kind = "application/octet-stream" if what == "weights" else "application/json"
            self._send(200, job["files"][what], kind)

        def _json(self, value: Any, status: int = 200) -> None:
            self._send(status, json.dumps(value).encode())

        def _send(self, status: int, data: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
