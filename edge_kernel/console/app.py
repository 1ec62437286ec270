"""``rapha-edge console``: the hospital's web console, a small tornado app on the edge host.

Who may use it: the person who starts it, holding a key registered with an admin role
(``data-steward`` and/or ``output-checker``); a key without one is refused at start. It
listens on 127.0.0.1 only, on its own port (never the researcher API's), and prints a URL
with a one-time login token; the token, once exchanged, gives an HttpOnly, SameSite=Strict
session cookie and is spent. A request without a session gets 401 on every route, one
carrying researcher credentials (an ``Authorization`` header, as the researcher API's signed
requests carry) 403 on every route, whatever else it holds.

What it shows it reads from the config directory, as ``rapha-edge status``, ``jobs list``
and ``audit verify`` do (``views.py``), and the approvals and release reviews from the
running edge's admin socket (``admin.py``). What it changes goes over that socket only:
each approve / reject is a POST carrying a nonce the console made for that form, that
session, that action and that job, spent on first use (a replayed or forged POST is
refused before anything is signed); it is then signed with the console's key by the same
function the CLI uses (``approval_commands.send_approval``, ``release.commands.send_decision``)
and the edge verifies and audits it exactly as it does the CLI's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.web

from jupyter_rapha.protocol.errors import BadInput, RaphaError
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.review import check_reason

from ..settings import Settings
from . import pages, views

COOKIE = "rapha_console"
SESSION_SECONDS = 8 * 3600
NONCE_SECONDS = 3600
MAX_NONCES = 500  # per session: the oldest go first
DATA_STEWARD, OUTPUT_CHECKER = "data-steward", "output-checker"
ADMIN_ROLES = (DATA_STEWARD, OUTPUT_CHECKER)
ROLE_FOR = {"approval": DATA_STEWARD, "release": OUTPUT_CHECKER}
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")


@dataclass(frozen=True)
class Identity:
    """The console's key and what the registry says it may do."""

    name: str
    key: PrivateKey
    roles: tuple[str, ...]
    edge_key_id: str


def console_identity(settings: Settings, key_path: Path) -> Identity:
    """Refuse, before anything listens, a key the registry does not give an admin role."""
    from ..release.commands import config_edge_key_id, read_checker_key
    from ..researchers import ResearcherRegistry

    key = read_checker_key(key_path)
    edge_key_id = config_edge_key_id(settings)
    if key.key_id == edge_key_id:
        raise BadInput("--key is the edge's own key: the console signs as a person, with a key registered with "
                       "'rapha-edge researchers add NAME KEY --role data-steward' (or output-checker)")
    entries = [r for r in ResearcherRegistry(settings.config_dir).all() if r.key_id == key.key_id]
    if not entries:
        raise BadInput(f"--key {key_path}: key {key.key_id} is not registered at this edge",
                       hint="register it with 'rapha-edge researchers add NAME KEY --role data-steward' "
                            "(or --role output-checker)")
    entry = entries[0]
    roles = tuple(r for r in entry.roles if r in ADMIN_ROLES)
    if not roles:
        raise BadInput(f"--key {key_path}: {entry.name}'s key is registered with the role(s) "
                       f"{', '.join(entry.roles)}, not data-steward or output-checker: a researcher key cannot "
                       "open the console")
    return Identity(entry.name, key, roles, edge_key_id)


@dataclass
class Session:
    expires: float
    nonces: dict[str, tuple[str, str, float]] = field(default_factory=dict)


class Sessions:
    """The one-time login token, the sessions it gave, and each session's form nonces."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.token: str | None = secrets.token_urlsafe(32)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def login(self, token: str) -> str | None:
        """A new session's cookie value for the right token, once; None otherwise."""
        with self._lock:
            if self.token is None or not hmac.compare_digest(token.encode(), self.token.encode()):
                return None
            self.token = None
            cookie = secrets.token_urlsafe(32)
            self._sessions[cookie] = Session(self.clock() + SESSION_SECONDS)
            return cookie

    def get(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        with self._lock:
            session = self._sessions.get(cookie)
            if session is None or session.expires < self.clock():
                self._sessions.pop(cookie, None)
                return None
            return session

    def make_nonce(self, session: Session, action: str, job_id: str) -> str:
        with self._lock:
            now = self.clock()
            for old in [n for n, (_, _, made) in session.nonces.items() if made + NONCE_SECONDS < now]:
                del session.nonces[old]
            while len(session.nonces) >= MAX_NONCES:
                del session.nonces[next(iter(session.nonces))]
            nonce = secrets.token_urlsafe(24)
            session.nonces[nonce] = (action, job_id, now)
            return nonce

    def spend_nonce(self, session: Session, nonce: str, action: str, job_id: str) -> bool:
        """True once for a nonce this session was given for this action on this job."""
        with self._lock:
            kept = session.nonces.pop(nonce, None)
            return kept is not None and kept[:2] == (action, job_id) and kept[2] + NONCE_SECONDS >= self.clock()


class ConsoleHandler(tornado.web.RequestHandler):
    needs_session = True

    def initialize(self, console: Console) -> None:
        self.console = console
        self.session: Session | None = None

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-store")
        self.clear_header("Server")

    def prepare(self) -> None:
        if self.request.host_name not in ("127.0.0.1", "localhost"):
            # a page elsewhere that renamed itself to this address (DNS rebinding) reads nothing
            self._refuse(403, "Wrong host", "the console answers at 127.0.0.1 only, by that name")
            return
        if "Authorization" in self.request.headers:
            self._refuse(403, "Researcher credentials refused",
                         "this is the hospital's console: a researcher's signed request (an Authorization header) "
                         "is not accepted on any of its routes")
            return
        if self.needs_session:
            self.session = self.console.sessions.get(self.get_cookie(COOKIE))
            if self.session is None:
                self._refuse(401, "Not logged in", "no console session: open the login URL 'rapha-edge console' "
                                                   "printed (its token works once; start the console again for a "
                                                   "new one)")

    def _refuse(self, status: int, title: str, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(pages.message_page(title, message))

    def show(self, title: str, body: str, *, status: int = 200, notice: str = "", error: str = "") -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        identity = self.console.identity
        self.finish(pages.page(title, body, who=f"{identity.name} ({', '.join(identity.roles)})", notice=notice,
                               error=error))

    def nonce_maker(self, action: str) -> pages.NonceMaker | None:
        """Forms only for the roles the console's key holds."""
        if ROLE_FOR[action] not in self.console.identity.roles or self.session is None:
            return None
        session = self.session

        def make(kind: str, job_id: str) -> str:
            return self.console.sessions.make_nonce(session, kind, job_id)

        return make

    async def off_loop(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(pages.message_page(f"HTTP {status_code}", "the console could not answer this request"))


class LoginHandler(ConsoleHandler):
    needs_session = False

    def get(self) -> None:
        cookie = self.console.sessions.login(self.get_query_argument("token", ""))
        if cookie is None:
            self._refuse(403, "Login refused", "this login token is wrong or was used already: start "
                                               "'rapha-edge console' again for a new URL")
            return
        self.set_cookie(COOKIE, cookie, httponly=True, samesite="Strict", path="/", expires_days=None)
        self.redirect("/", status=303)


class StyleHandler(ConsoleHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/css; charset=utf-8")
        self.finish(pages.STYLESHEET)


class PageHandler(ConsoleHandler):
    """A read-only page: ``render(console, *args) -> (title, body)``, off the event loop."""

    def initialize(self, console: Console, render: Callable[..., tuple[str, str]]) -> None:  # type: ignore[override]
        super().initialize(console)
        self.render_page = render

    async def get(self, *args: str) -> None:
        try:
            title, body = await self.off_loop(self.render_page, self.console, *args)
        except RaphaError as exc:
            self.show("Not available", "", status=_status(exc), error=exc.diagnostics())
            return
        if title == "compliance":  # the compliance map's own page, as 'rapha-edge compliance --html' prints it
            self._compliance(body)
            return
        self.show(title, body)

    def _compliance(self, document: str) -> None:
        """Its one inline stylesheet is allowed by its digest, nothing else inline; the
        console's navigation goes on top."""
        style = re.search(r"<style>(.*?)</style>", document, re.S)
        if style is not None:
            digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
            self.set_header("Content-Security-Policy", CSP.replace("style-src 'self'",
                                                                   f"style-src 'self' 'sha256-{digest}'"))
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(document.replace("<body>", f"<body>{pages.nav()}", 1))


class DetailHandler(ConsoleHandler):
    """An approval or a release review, with its forms; and the POST that decides it."""

    def initialize(self, console: Console, action: str) -> None:  # type: ignore[override]
        super().initialize(console)
        self.action = action

    async def get(self, job_ref: str) -> None:
        await self._render(job_ref)

    async def _render(self, job_ref: str, *, status: int = 200, notice: str = "", error: str = "") -> None:
        try:
            detail = await self.off_loop(self.console.admin_get, f"/admin/v1/{self.action}/{job_ref}")
        except RaphaError as exc:
            self.show(f"Job {job_ref}", "", status=_status(exc) if status == 200 else status,
                      error="; ".join(m for m in (error, exc.diagnostics()) if m))
            return
        nonce = self.nonce_maker(self.action)
        if self.action == "approval":
            title, body = f"Approval of job {detail['job_id']}", pages.approval_page(detail, nonce)
        else:
            title, body = f"Release review of job {detail['job_id']}", pages.release_page(detail, nonce)
        self.show(title, body, status=status, notice=notice, error=error)

    async def post(self, job_ref: str) -> None:
        assert self.session is not None  # prepare() answered a request without one
        if ROLE_FOR[self.action] not in self.console.identity.roles:
            await self._render(job_ref, status=403, error=(
                f"{self.console.identity.name}'s key does not hold the role {ROLE_FOR[self.action]}: it cannot "
                f"decide {'approvals' if self.action == 'approval' else 'releases'}; nothing was signed"))
            return
        nonce = self.get_body_argument("nonce", "")
        if not self.console.sessions.spend_nonce(self.session, nonce, self.action, job_ref):
            await self._render(job_ref, status=403, error=(
                "this form was already sent, or was not made by this console for this job and session: nothing "
                "was signed and nothing changed; decide again from the form below"))
            return
        try:
            answer = await self.off_loop(self._decide, job_ref, self.get_body_argument("decision", ""),
                                         self.get_body_argument("reason", ""))
        except RaphaError as exc:
            await self._render(job_ref, status=_status(exc), error=f"{exc.diagnostics()} (nothing changed)")
            return
        await self._render(job_ref, notice=_decided(self.action, answer))

    def _decide(self, job_ref: str, decision: str, reason: str) -> dict[str, Any]:
        identity = self.console.identity
        if decision not in ("approve", "reject"):
            raise BadInput(f"a decision is approve or reject, not {decision[:20]!r}")
        reason = check_reason(reason)
        client = self.console.admin()
        if self.action == "approval":
            from ..approval_commands import send_approval

            return send_approval(client, identity.key, identity.edge_key_id, job_ref, identity.name, decision,
                                 reason)
        from ..release.commands import send_decision

        return send_decision(client, identity.key, identity.edge_key_id, job_ref, identity.name, decision, reason)


class UnknownRoute(ConsoleHandler):
    def get(self, *args: str) -> None:
        self.show("Not found", "", status=404, error=f"no console page {self.request.path[:128]}")

    post = get


def _status(exc: RaphaError) -> int:
    from jupyter_rapha.protocol.errors import AuthError, NotFound

    from ..admin import AdminUnavailable

    for kind, status in ((BadInput, 400), (AuthError, 403), (NotFound, 404), (AdminUnavailable, 503)):
        if isinstance(exc, kind):
            return status
    return 409  # the edge refused the decision (wrong state, replay, a vote counted already...)


def _decided(action: str, answer: dict[str, Any]) -> str:
    if action == "approval":
        from ..approval_commands import decided_line
    else:
        from ..release.commands import decided_line
    return decided_line(answer)


class Console:
    """The app's state: the settings, the identity, the sessions, the admin socket."""

    def __init__(self, settings: Settings, identity: Identity, sessions: Sessions | None = None) -> None:
        self.settings = settings
        self.identity = identity
        self.sessions = sessions or Sessions()

    def admin(self) -> Any:
        from ..admin import AdminClient

        return AdminClient(self.settings.state_dir)

    def admin_get(self, route: str) -> Any:
        return self.admin().get(route)

    def app(self) -> tornado.web.Application:
        args = {"console": self}
        job = r"([0-9a-zA-Z]{1,64})"

        def page(render: Callable[..., tuple[str, str]]) -> dict[str, Any]:
            return {"console": self, "render": render}

        return tornado.web.Application([
            (r"/login", LoginHandler, args),
            (r"/console.css", StyleHandler, args),
            (r"/", PageHandler, page(views.jobs)),
            (rf"/jobs/{job}", PageHandler, page(views.job)),
            (r"/approvals", PageHandler, page(views.approvals)),
            (rf"/approvals/{job}", DetailHandler, {"console": self, "action": "approval"}),
            (rf"/approvals/{job}/decide", DetailHandler, {"console": self, "action": "approval"}),
            (r"/releases", PageHandler, page(views.releases)),
            (rf"/releases/{job}", DetailHandler, {"console": self, "action": "release"}),
            (rf"/releases/{job}/decide", DetailHandler, {"console": self, "action": "release"}),
            (r"/datasets", PageHandler, page(views.datasets)),
            (r"/researchers", PageHandler, page(views.researchers)),
            (r"/audit", PageHandler, page(views.audit)),
            (r"/edge", PageHandler, page(views.edge)),
            (r"/compliance", PageHandler, page(views.compliance)),
        ], default_handler_class=UnknownRoute, default_handler_args=args, compress_response=False)


def serve(console: Console, port: int, on_ready: Callable[[str], Awaitable[None] | None]) -> None:
    """Listen on 127.0.0.1:``port`` (0: any free port) until SIGINT (Ctrl-C) or SIGTERM, then
    return: the console keeps nothing durable (sessions live in memory, every action is the
    edge's to audit), so stopping needs only the listener closed."""
    import signal

    from tornado.ioloop import IOLoop

    loop = IOLoop.current()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: loop.add_callback_from_signal(loop.stop))
    server = tornado.httpserver.HTTPServer(console.app(), max_body_size=64 * 1024)
    sockets = tornado.netutil.bind_sockets(port, address="127.0.0.1")
    server.add_sockets(sockets)
    bound = sockets[0].getsockname()[1]
    assert console.sessions.token is not None
    on_ready(f"http://127.0.0.1:{bound}/login?token={console.sessions.token}")
    try:
        loop.start()
    finally:
        server.stop()
