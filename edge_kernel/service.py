"""The edge's HTTP service (tornado).

Every researcher route authenticates the exact request bytes first (S8). A refusal of
a request whose signature verified (a replay) is audited before it is answered (S7);
refusals of requests nobody authenticated are counted into one summary row per window,
so that anonymous clients cannot grow the audit log without bound. One function maps
errors to HTTP status, so no handler can answer a refusal with 200 or leak a traceback
with a 500; bad input of any shape (oversized or deeply nested bodies, non-ASCII
numbers, invalid Unicode) is a 4xx with a JSON body.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import logging
from typing import Any
from collections.abc import Awaitable, Callable

import tornado.netutil
import tornado.web

from jupyter_rapha.protocol import bounded
from jupyter_rapha.protocol.errors import (AuthError, BadInput, Fault, GateDenied, NotFound, RaphaError, Replayed,
                                           StorageUnavailable)
from jupyter_rapha.protocol.jobspec import parse_jobspec

from .artifacts import MAX_UPLOAD_BYTES, QuotaExceeded, Upload
from .audit import RefusalTally
from .catalog import CatalogCache
from .edge import Edge
from .researchers import Researcher

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 2 * 1024 * 1024
# A body over MAX_BODY_BYTES is read on and dropped up to here, so that the client is
# still listening when its 413 comes; past this the connection is simply closed.
DRAIN_BODY_BYTES = 64 * 1024 * 1024


class BodyTooLarge(BadInput):
    """A request body over MAX_BODY_BYTES (HTTP 413)."""


def error_status(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The one place that maps an error to a status and a body a user can act on."""
    if isinstance(exc, StorageUnavailable):
        # The machine's fault, not the request's, and passing: 503 with a generic reason
        # (never a path or a SQLite message), the same text GET /v1/edge lists.
        return 503, {"kind": "StorageUnavailable", "message": exc.diagnostics()}
    if isinstance(exc, tornado.web.HTTPError) and 400 <= exc.status_code < 500:
        # tornado's own refusals of the request line (bad query encoding, missing argument)
        return exc.status_code, {"kind": "BadRequest", "message": http.client.responses.get(exc.status_code, "")}
    if isinstance(exc, RaphaError):
        for kind, status in ((BodyTooLarge, 413), (QuotaExceeded, 413), (BadInput, 400), (AuthError, 401),
                             (GateDenied, 403), (NotFound, 404)):
            if isinstance(exc, kind):
                body: dict[str, Any] = {"kind": type(exc).__name__, "message": exc.diagnostics()}
                if isinstance(exc, GateDenied):
                    body["reasons"] = exc.reasons
                return status, body
        if isinstance(exc, Fault):
            return 500, {"kind": type(exc).__name__, "message": exc.diagnostics()}
    return 500, {"kind": "InternalError", "message": "internal error at the edge"}


def api(method: Callable[..., Awaitable[None] | None]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def wrapper(self: BaseHandler, *args: Any) -> None:
        try:
            self.take_body()
            result = method(self, *args)
            if result is not None:
                await result
        except Exception as exc:
            if not isinstance(exc, (RaphaError, tornado.web.HTTPError)):
                log.exception("unhandled error on %s %s", self.request.method, self.request.path)
            status, body = error_status(exc)
            if isinstance(exc, AuthError):
                try:
                    self.audit_refusal(exc)
                except StorageUnavailable as fault:  # not audited: refused still, and said why
                    status, body = error_status(fault)
            if status == 503:
                self.set_header("Retry-After", "30")
            self.set_status(status)
            self.write_json({"error": body})
    return wrapper


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    """Bodies are streamed in so that one over MAX_BODY_BYTES is dropped as it arrives
    (never held) and still answered with a 413 once it has been read."""

    edge: Edge
    refusals: RefusalTally

    def initialize(self, edge: Edge, refusals: RefusalTally) -> None:
        self.edge = edge
        self.refusals = refusals
        self._chunks: list[bytes] = []
        self._body_size = 0

    def prepare(self) -> None:
        # Past DRAIN_BODY_BYTES tornado stops reading and closes the connection once the
        # headers are in; answer before that, so the client learns why.
        declared = self.request.headers.get("Content-Length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > DRAIN_BODY_BYTES:
            self.set_status(413)
            self.write_json({"error": {"kind": "BodyTooLarge",
                                       "message": f"request body is larger than {MAX_BODY_BYTES} bytes"}})

    def data_received(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if self._body_size <= MAX_BODY_BYTES:
            self._chunks.append(chunk)
        else:
            self._chunks.clear()

    def take_body(self) -> None:
        if self._body_size > MAX_BODY_BYTES:
            raise BodyTooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
        self.request.body = b"".join(self._chunks)

    def audit_refusal(self, exc: AuthError) -> None:
        method = self.request.method or ""
        if isinstance(exc, Replayed):  # the signature verified: a known key's request, audited on its own
            self.edge.audit.append("request.reject", detail={"kind": type(exc).__name__, "method": method})
        else:
            self.refusals.count(type(exc).__name__, method)

    def write_json(self, value: Any, status: int | None = None) -> None:
        if status:
            self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Reached only for errors outside @api (e.g. routing, body too large): never a traceback.
        self.write_json({"error": {"kind": "HTTPError", "message": self._reason}})

    def researcher(self) -> Researcher:
        try:
            return self.edge.auth.authenticate(self.request.headers.get("Authorization"), self.request.method or "",
                                               self.request.uri or "", self.request.body or b"")
        except AuthError:
            raise
        except BadInput as exc:
            # A malformed signature header is an authentication failure, audited as such.
            raise AuthError(exc.message, hint=exc.hint) from exc


class EdgeInfoHandler(BaseHandler):
    @api
    def get(self) -> None:
        self.write_json({**self.edge.info(), **self.edge.storage_status()})


class DatasetsHandler(BaseHandler):
    @api
    def get(self) -> None:
        self.researcher()
        self.write_json({"datasets": [self.edge.catalog_entry(d) for d in self.edge.datasets.all().values()]})


class CatalogHandler(BaseHandler):
    def initialize(self, edge: Edge, refusals: RefusalTally, catalog: CatalogCache) -> None:  # type: ignore[override]
        super().initialize(edge, refusals)
        self.catalog = catalog  # one per app: signed again only when the offer changes

    @api
    def get(self) -> None:
        self.researcher()
        self.write_json(self.catalog.signed(self.edge))


class PolicyHandler(BaseHandler):
    """The policy bundle the policy gate decides with, signed, for the notebook's dry run."""

    @api
    def get(self) -> None:
        from .catalog import signed_policy

        self.write_json(signed_policy(self.edge, self.researcher()))


class JobEventsHandler(BaseHandler):
    @api
    def get(self, job_ref: str) -> None:
        researcher = self.researcher()
        job_id = self.edge.store.resolve(job_ref, researcher.key_id)
        job = self.edge.store.get(job_id, researcher.key_id)  # another researcher's job is unknown
        after = bounded.whole_number(self.get_query_argument("after", "0"),
                                     "after (the last event sequence number seen, 0 for all)")
        self.write_json({"job_id": job_id, "state": job.state,
                         "events": self.edge.store.events(job_id, after)})


class ArtifactHandler(BaseHandler):
    """``PUT /v1/artifacts/{sha256}``: the bytes of an artifact a job spec will name. The
    request is signed over the digest in its path, so it is authenticated before any of
    its body is read, and the body is written to disk as it arrives (up to its own limit,
    far above the 2 MiB of other requests) and kept only if it has that digest."""

    upload: Upload | None = None

    def prepare(self) -> None:
        declared = self.request.headers.get("Content-Length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
            self._refuse(BodyTooLarge(f"an artifact may be at most {MAX_UPLOAD_BYTES} bytes"))
            return
        try:
            sha256 = self.path_args[0]
            researcher = self.edge.auth.authenticate(self.request.headers.get("Authorization"), "PUT",
                                                     self.request.uri or "", b"", body_sha256=sha256)
            self.key_id = researcher.key_id
            self.edge.prune_artifacts(researcher.key_id)  # expired ones first: they leave room
            size = int(declared) if declared.isascii() and declared.isdigit() else None
            self.upload = self.edge.artifacts.upload(researcher.key_id, sha256, declared=size)
            # the server reads other bodies only to 64 MiB; this authenticated one to its own limit
            self.request.connection.set_max_body_size(MAX_UPLOAD_BYTES)  # type: ignore[union-attr]
        except Exception as exc:
            self._refuse(exc)

    def _refuse(self, exc: BaseException) -> None:
        status, body = error_status(exc)
        if isinstance(exc, AuthError):
            try:
                self.audit_refusal(exc)
            except StorageUnavailable as fault:  # not audited: refused still, and said why
                status, body = error_status(fault)
        self.set_status(status)
        self.write_json({"error": body})

    def data_received(self, chunk: bytes) -> None:
        if self.upload is not None:
            self.upload.write(chunk)

    def on_connection_close(self) -> None:
        if self.upload is not None:
            self.upload.abort()

    @api
    def put(self, sha256: str) -> None:
        upload = self.upload
        if upload is None:
            raise BadInput("the upload was not accepted")
        self.upload = None
        upload.finish(lambda: self.edge.audit.append(
            "artifact.upload", actor=self.key_id, detail={"sha256": sha256, "bytes": upload.size}))
        self.write_json({"sha256": sha256, "bytes": upload.size}, status=201)


class JobsHandler(BaseHandler):
    @api
    def get(self) -> None:
        researcher = self.researcher()
        self.write_json({"jobs": [self.edge.job_status(j) for j in self.edge.store.list(researcher.key_id)]})

    @api
    def post(self) -> None:
        researcher = self.researcher()
        body = bounded.loads(self.request.body, what="request body")
        if not isinstance(body, dict) or set(body) != {"spec"}:
            raise BadInput("request body must be {\"spec\": {...}}")
        spec = parse_jobspec(body["spec"])
        if spec.researcher_key_id != researcher.key_id:
            raise BadInput("spec.researcher_key_id is not the key that signed the request")
        self.edge.artifacts.check(spec, researcher.key_id)  # uploaded, the size signed, safetensors
        request_sha256 = hashlib.sha256(self.request.body).hexdigest()
        job = self.edge.jobs.submit(spec, researcher, request_sha256)
        self.write_json({"job_id": job.job_id, "state": job.state}, status=202)


class JobHandler(BaseHandler):
    @api
    def get(self, job_ref: str) -> None:
        researcher = self.researcher()
        job_id = self.edge.store.resolve(job_ref, researcher.key_id)
        self.write_json(self.edge.job_status(self.edge.store.get(job_id, researcher.key_id)))

    @api
    def delete(self, job_ref: str) -> None:
        researcher = self.researcher()
        job_id = self.edge.store.resolve(job_ref, researcher.key_id)
        self.write_json(self.edge.job_status(self.edge.jobs.cancel(job_id, researcher)))


class JobFileHandler(BaseHandler):
    FILES = {"receipt": ("receipt.json", "application/json"), "metrics": ("metrics.json", "application/json"),
             "weights": ("weights.safetensors", "application/octet-stream")}

    @api
    def get(self, job_ref: str, what: str) -> None:
        researcher = self.researcher()
        job_id = self.edge.store.resolve(job_ref, researcher.key_id)
        job = self.edge.store.get(job_id, researcher.key_id)
        if job.state != "completed":
            raise NotFound(f"job {job_id} has no {what} (state: {job.state})")
        name, content_type = self.FILES[what]
        data = (self.edge.release_dir(job_id) / name).read_bytes()
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.finish(data)


class ChainHandler(BaseHandler):
    """Ethereum JSON-RPC of the embedded dev chain, so verifiers use stock clients."""

    @api
    def post(self) -> None:
        from .anchor.rpcserver import rpc_http_answer

        if self.edge.chain is None:
            raise NotFound("this edge anchors on an external chain; use its RPC endpoint")
        status, answer = rpc_http_answer(self.edge.chain, self.request.body or b"")
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(answer)


class UnknownRouteHandler(BaseHandler):
    """Every path no route names: a JSON 404 once the body is in (streamed and dropped like
    any other, rather than buffered whole as tornado's default handler would)."""

    @api
    def unknown(self, *args: str) -> None:
        raise NotFound(f"no route {self.request.method} {self.request.path[:128]}")

    get = post = put = patch = delete = options = unknown


def make_app(edge: Edge, refusals: RefusalTally | None = None) -> tornado.web.Application:
    args = {"edge": edge, "refusals": refusals or RefusalTally(edge.audit)}
    job = r"([0-9a-f]{8,32})"  # an id, or a unique prefix of one of the caller's jobs (store.resolve)
    return tornado.web.Application([
        (r"/v1/edge", EdgeInfoHandler, args),
        (r"/v1/datasets", DatasetsHandler, args),
        (r"/v1/catalog", CatalogHandler, {**args, "catalog": CatalogCache()}),
        (r"/v1/policy", PolicyHandler, args),
        (r"/v1/artifacts/([0-9a-f]{64})", ArtifactHandler, args),
        (r"/v1/jobs", JobsHandler, args),
        (rf"/v1/jobs/{job}", JobHandler, args),
        (rf"/v1/jobs/{job}/events", JobEventsHandler, args),
        (rf"/v1/jobs/{job}/(receipt|metrics|weights)", JobFileHandler, args),
        (r"/chain", ChainHandler, args),
    ], compress_response=False, default_handler_class=UnknownRouteHandler, default_handler_args=args)


def tls_context(settings: Any) -> Any:
    """HTTPS when the settings name a certificate; None serves plain HTTP."""
    if not settings.tls_cert:
        return None
    import ssl

    from jupyter_rapha.protocol.errors import BadInput as _BadInput

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.path(settings.tls_cert), settings.path(settings.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise _BadInput("server.tls_cert / server.tls_key cannot be loaded", hint=str(exc)) from exc
    return context
