"""The admin surface of a running edge: a Unix socket in its state directory (S8).

Researcher routes listen on TCP and authenticate each request with a researcher key; the
admin surface is not on that listener at all. ``state/admin.sock`` (mode 0600, in the
edge's 0700 state directory) is reachable only by whoever may read the edge's config
directory, the same people ``rapha-edge jobs list`` and ``researchers add`` already trust,
and never from a job: the sandbox covers the config directory and runs as another uid
(S1). What changes a job's fate needs more than the socket: an output checker's decision
is a statement signed with the checker's registered key (``release/desk.py``), a data
steward's run approval one signed with the steward's (``approval_desk.py``).

Routes (JSON; errors as on the researcher API, one place maps them):

    GET  /admin/v1/release               {"jobs": [held job lines]}
    GET  /admin/v1/release/JOB           the held job's checks, figures, decisions, outputs summary
    POST /admin/v1/release/JOB/decision  {"checker": NAME, "statement": DSSE envelope}
    GET  /admin/v1/approval              {"jobs": [jobs awaiting a data steward's approval]}
    GET  /admin/v1/approval/JOB          the cell, scan findings, policy result, budget, cost, decisions
    POST /admin/v1/approval/JOB/decision {"steward": NAME, "statement": DSSE envelope}

The command-line side (``AdminClient``) speaks HTTP/1.1 over the same socket.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import tornado.ioloop
import tornado.netutil
import tornado.web

from jupyter_rapha.protocol import bounded
from jupyter_rapha.protocol.errors import AuthError, BadInput, Fault, NotFound, RaphaError, StorageFault
from jupyter_rapha.protocol.review import MAX_STATEMENT_BYTES

from .approval_desk import ApprovalDesk
from .release.desk import ReleaseDesk
from .service import DRAIN_BODY_BYTES, BaseHandler, api

ADMIN_SOCKET = "admin.sock"
ADMIN_TIMEOUT_SECONDS = 120.0  # a release waits for its anchor (chain.release_wait_seconds)
_MAX_SUN_PATH = 100  # sockaddr_un holds 108 bytes; longer paths are reached through a directory fd


def admin_socket_path(state_dir: Path) -> Path:
    return state_dir / ADMIN_SOCKET


@contextmanager
def _reachable(path: Path) -> Iterator[str]:
    """A name for ``path`` that fits a socket address: itself, or, when the config
    directory's path is long, the same file through /proc/self/fd of its directory."""
    if len(os.fsencode(path)) <= _MAX_SUN_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def bind_admin_socket(path: Path) -> socket.socket:
    with _reachable(path) as name:
        return tornado.netutil.bind_unix_socket(name, mode=0o600)


class AdminHandler(BaseHandler):
    def initialize(self, desk: ReleaseDesk) -> None:  # type: ignore[override]
        self.desk = desk
        self._chunks: list[bytes] = []
        self._body_size = 0

    def audit_refusal(self, exc: Any) -> None:
        """The desk writes its own row for each refused decision."""


class HeldListHandler(AdminHandler):
    @api
    def get(self) -> None:
        self.write_json({"jobs": self.desk.list()})


class HeldJobHandler(AdminHandler):
    @api
    def get(self, job_ref: str) -> None:
        self.write_json(self.desk.show(job_ref))


class DecisionHandler(AdminHandler):
    @api
    async def post(self, job_ref: str) -> None:
        body = bounded.loads(self.request.body, what="decision request", max_bytes=2 * MAX_STATEMENT_BYTES,
                             max_depth=10)
        if not isinstance(body, dict) or set(body) != {"checker", "statement"} or not isinstance(body["checker"], str):
            raise BadInput('a decision request is {"checker": NAME, "statement": {DSSE envelope}}')
        # A release signs, writes and waits for its anchor: off the event loop.
        answer = await tornado.ioloop.IOLoop.current().run_in_executor(
            None, self.desk.decide, job_ref, body["checker"], body["statement"])
        self.write_json(answer)


class ApprovalHandler(BaseHandler):
    def initialize(self, approvals: ApprovalDesk) -> None:  # type: ignore[override]
        self.approvals = approvals
        self._chunks: list[bytes] = []
        self._body_size = 0

    def audit_refusal(self, exc: Any) -> None:
        """The desk writes its own row for each refused decision."""


class WaitingListHandler(ApprovalHandler):
    @api
    def get(self) -> None:
        self.write_json({"jobs": self.approvals.list()})


class WaitingJobHandler(ApprovalHandler):
    @api
    def get(self, job_ref: str) -> None:
        self.write_json(self.approvals.show(job_ref))


class ApprovalDecisionHandler(ApprovalHandler):
    @api
    async def post(self, job_ref: str) -> None:
        body = bounded.loads(self.request.body, what="approval request", max_bytes=2 * MAX_STATEMENT_BYTES,
                             max_depth=10)
        if not isinstance(body, dict) or set(body) != {"steward", "statement"} or not isinstance(body["steward"], str):
            raise BadInput('an approval request is {"steward": NAME, "statement": {DSSE envelope}}')
        answer = await tornado.ioloop.IOLoop.current().run_in_executor(
            None, self.approvals.decide, job_ref, body["steward"], body["statement"])
        self.write_json(answer)


class UnknownAdminRoute(AdminHandler):
    @api
    def unknown(self, *args: str) -> None:
        raise NotFound(f"no admin route {self.request.method} {self.request.path[:128]}")

    get = post = put = patch = delete = options = unknown


def make_admin_app(desk: ReleaseDesk, approvals: ApprovalDesk | None = None) -> tornado.web.Application:
    args = {"desk": desk}
    job = r"([0-9a-zA-Z]{1,64})"  # checked by the desk, which says what a job id looks like
    waiting: list[Any] = []
    if approvals is not None:
        approval_args = {"approvals": approvals}
        waiting = [(r"/admin/v1/approval", WaitingListHandler, approval_args),
                   (rf"/admin/v1/approval/{job}", WaitingJobHandler, approval_args),
                   (rf"/admin/v1/approval/{job}/decision", ApprovalDecisionHandler, approval_args)]
    return tornado.web.Application([
        *waiting,
        (r"/admin/v1/release", HeldListHandler, args),
        (rf"/admin/v1/release/{job}", HeldJobHandler, args),
        (rf"/admin/v1/release/{job}/decision", DecisionHandler, args),
    ], compress_response=False, default_handler_class=UnknownAdminRoute, default_handler_args=args)


class AdminServer:
    """The admin socket served beside the researcher listener, on the same event loop."""

    def __init__(self, desk: ReleaseDesk, path: Path, approvals: ApprovalDesk | None = None) -> None:
        from tornado.httpserver import HTTPServer

        self.path = path
        self.server = HTTPServer(make_admin_app(desk, approvals), max_body_size=DRAIN_BODY_BYTES)
        self.server.add_socket(bind_admin_socket(path))

    def stop(self) -> None:
        self.server.stop()
        with _reachable(self.path) as name:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)  # a stale socket would only answer "connection refused"


def edge_desk(edge: Any) -> ReleaseDesk:
    """The desk over a composed ``Edge``: its held jobs, store, registry and audit log."""
    return ReleaseDesk(held=edge.jobs, store=edge.store, researchers=edge.researchers, audit=edge.audit,
                       edge_key=edge.key.public, held_outputs=held_outputs_reader(edge.settings.jobs_dir))


def edge_approval_desk(edge: Any) -> ApprovalDesk:
    """The data stewards' desk over a composed ``Edge``: its job walk, store, registry and audit log."""
    return ApprovalDesk(jobs=edge.jobs, store=edge.store, researchers=edge.researchers, audit=edge.audit,
                        edge_key=edge.key.public, jobs_dir=edge.settings.jobs_dir)


def held_outputs_reader(jobs_dir: Path) -> Any:
    """The held weights' and metrics' SHA-256, from the held predicate (never the weights)."""
    def held_outputs(job_id: str) -> tuple[str, str]:
        from .release.held import held_dir

        path = held_dir(jobs_dir, job_id) / "predicate.json"
        try:
            outputs = json.loads(path.read_bytes())["outputs"]
            return outputs["weights"]["sha256"], outputs["metrics"]["sha256"]
        except FileNotFoundError:
            raise NotFound(f"job {job_id} has no held outputs") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageFault("a held job's files are damaged") from exc

    return held_outputs


# ---- the command-line side ---------------------------------------------------------------

class AdminUnavailable(Fault):
    """No edge answers on this config directory's admin socket."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        with _reachable(self._path) as name:
            self.sock.connect(name)


class AdminClient:
    def __init__(self, state_dir: Path, timeout: float = ADMIN_TIMEOUT_SECONDS) -> None:
        self.path = admin_socket_path(state_dir)
        self.timeout = timeout

    def get(self, route: str) -> Any:
        return self._call("GET", route, None)

    def post(self, route: str, body: Any) -> Any:
        return self._call("POST", route, json.dumps(body).encode())

    def _call(self, method: str, route: str, body: bytes | None) -> Any:
        connection = _UnixConnection(self.path, self.timeout)
        try:
            connection.request(method, route, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            status, data = response.status, response.read(4 * 1024 * 1024)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise AdminUnavailable(f"no edge is running for this config directory (nothing answers on {self.path})",
                                   hint="start it with 'rapha-edge serve'") from exc
        except OSError as exc:
            raise AdminUnavailable(f"the edge's admin socket {self.path} did not answer: {exc}") from exc
        finally:
            connection.close()
        return _answer(status, data)


def _answer(status: int, data: bytes) -> Any:
    try:
        value = json.loads(data)
    except ValueError:
        value = None
    if status == 200 and value is not None:
        return value
    error = value.get("error") if isinstance(value, dict) else None
    message = error.get("message") if isinstance(error, dict) else f"the edge answered HTTP {status}"
    # the kind the edge's status names, so that a caller (the console) can say it the same way
    kind = {400: BadInput, 401: AuthError, 403: AuthError, 404: NotFound}.get(status, RaphaError)
    raise kind(str(message))
