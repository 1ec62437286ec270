"""REST and websocket handlers under /rapha/api, each behind Jupyter's own auth.

One function, ``error_status``, maps errors to HTTP status for every handler: bad input
400 with what to fix, unknown 404, refusal 403 with the gate's reasons, an edge answer
that cannot be trusted 502, anything unexpected 500 with a generic body (its details go
to the server log only).
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any
from collections.abc import Awaitable, Callable

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from ..protocol.contract import TERMINAL_STATES as FINAL_STATES
from ..protocol.errors import AuthError, BadInput, Fault, GateDenied, NotFound, RaphaError, VerificationError
from ..routing.proxy import EdgeProxy
from ..routing.submission import parse_submission

AUTH_RESOURCE = "rapha"
JOB_ID = r"(?P<job_id>[0-9a-f]{8,32})"  # an id, or a unique prefix the edges resolve (EdgeProxy.resolve)


def error_status(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The one place that maps an error to an HTTP status and a body a researcher can act on."""
    if isinstance(exc, RaphaError):
        for kind, status in ((BadInput, 400), (NotFound, 404), (GateDenied, 403), (AuthError, 403),
                             (VerificationError, 502), (Fault, 502)):
            if isinstance(exc, kind):
                body: dict[str, Any] = {"kind": type(exc).__name__, "message": exc.diagnostics()}
                if isinstance(exc, GateDenied):
                    body["reasons"] = exc.reasons
                return status, body
    return 500, {"kind": "InternalError", "message": "internal error in the rapha extension"}


def api(method: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def wrapper(self: RaphaHandler, *args: Any, **kwargs: Any) -> None:
        try:
            await method(self, *args, **kwargs)
        except web.HTTPError:
            raise
        except Exception as exc:
            if not isinstance(exc, RaphaError):
                self.log.exception("rapha: unhandled error on %s %s", self.request.method, self.request.path)
            status, body = error_status(exc)
            self.set_status(status)
            self.finish(json.dumps({"error": body}))
    return wrapper


class RaphaHandler(ExtensionHandlerMixin, APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def proxy(self) -> EdgeProxy:
        proxy: EdgeProxy | RaphaError = self.settings["rapha_proxy"]
        if isinstance(proxy, RaphaError):  # the extension could not start its proxy: say why, per request
            raise proxy
        return proxy

    async def blocking(self, function: Callable[..., Any], *args: Any) -> Any:
        # Edge calls are blocking HTTP; keep them off the server's event loop.
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(value))

    def body_json(self) -> Any:
        try:
            return json.loads(self.request.body or b"")
        except ValueError as exc:
            raise BadInput("the request body is not JSON") from exc


class EdgesHandler(RaphaHandler):
    @web.authenticated
    @authorized
    @api
    async def get(self) -> None:
        self.write_json({"edges": await self.blocking(self.proxy.edges)})


class DatasetsHandler(RaphaHandler):
    @web.authenticated
    @authorized
    @api
    async def get(self) -> None:
        proxy = self.proxy
        datasets = await self.blocking(proxy.datasets)
        self.write_json({"datasets": datasets, "refused": proxy.refused})


class PolicyHandler(RaphaHandler):
    """``GET policy?site=NAME``: the edge's published policy, verified, for the notebook's dry run."""

    @web.authenticated
    @authorized
    @api
    async def get(self) -> None:
        site = self.get_query_argument("site", "")
        if not site:
            raise BadInput("give site=NAME: the configured edge whose policy to fetch")
        self.write_json(await self.blocking(self.proxy.policy, site))


class JobsHandler(RaphaHandler):
    @web.authenticated
    @authorized
    @api
    async def get(self) -> None:
        proxy = self.proxy
        jobs = await self.blocking(proxy.jobs)
        self.write_json({"jobs": jobs, "unreachable": proxy.unreachable})

    @web.authenticated
    @authorized
    @api
    async def post(self) -> None:
        submission = parse_submission(self.body_json())
        self.write_json({"jobs": await self.blocking(self.proxy.submit, submission)}, status=202)


class JobHandler(RaphaHandler):
    @web.authenticated
    @authorized
    @api
    async def get(self, job_id: str) -> None:
        self.write_json(await self.blocking(self.proxy.status, job_id))

    @web.authenticated
    @authorized
    @api
    async def delete(self, job_id: str) -> None:
        self.write_json(await self.blocking(self.proxy.cancel, job_id))


class JobEdgeHandler(RaphaHandler):
    """The pinned key and chain endpoint a notebook needs to verify the job's receipt itself."""

    @web.authenticated
    @authorized
    @api
    async def get(self, job_id: str) -> None:
        self.write_json(await self.blocking(self.proxy.job_edge, job_id))


class JobVerifyHandler(RaphaHandler):
    """The job's receipt verified by this server against the pinned edge key; every check
    named, as ``rapha verify --json`` prints them."""

    @web.authenticated
    @authorized
    @api
    async def get(self, job_id: str) -> None:
        self.write_json(await self.blocking(self.proxy.verify, job_id))


class JobOutputHandler(RaphaHandler):
    @web.authenticated
    @authorized
    @api
    async def get(self, job_id: str, what: str) -> None:
        value = await self.blocking(self.proxy.output, job_id, what)
        if what == "weights":
            # APIHandler.finish would label any body JSON; bytes go out as what they are.
            self.update_api_activity()
            self.set_header("Content-Type", "application/octet-stream")
            self.set_header("Cache-Control", "no-store")
            JupyterHandler.finish(self, value)
        else:
            self.write_json(value)


class JobEventsHandler(WebSocketMixin, WebSocketHandler, ExtensionHandlerMixin, JupyterHandler):
    """The job's events over a websocket: ``?after=N`` resumes after the last sequence seen,
    so a client that reconnects loses nothing. Closes after the final state."""

    auth_resource = AUTH_RESOURCE

    def set_default_headers(self) -> None:  # JupyterHandler's headers do not apply to websockets
        pass

    @ws_authenticated
    async def get(self, job_id: str) -> None:
        if not await ensure_async(self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE)):
            raise web.HTTPError(403)
        after = self.get_query_argument("after", "0")
        if not after.isdigit():
            raise web.HTTPError(400, "after must be a whole number: the last event sequence number seen")
        self.job_id, self.after = job_id, int(after)
        self.proxy: EdgeProxy = self.settings["rapha_proxy"]
        if isinstance(self.proxy, RaphaError):
            raise web.HTTPError(503, self.proxy.diagnostics())
        await super().get(job_id)

    def open(self, *args: Any, **kwargs: Any) -> None:
        super().open()
        self._task = asyncio.ensure_future(self._pump())

    def on_close(self) -> None:
        task = getattr(self, "_task", None)
        if task is not None:
            task.cancel()

    async def _pump(self) -> None:
        poll = float(self.settings.get("rapha_event_poll", 0.5))
        loop = asyncio.get_running_loop()
        try:
            self.job_id = (await loop.run_in_executor(None, self.proxy.resolve, self.job_id))[1]
            while True:
                answer = await loop.run_in_executor(None, self.proxy.events, self.job_id, self.after)
                if await self._send_events(answer.get("events", [])):
                    break
                await asyncio.sleep(poll)
        except (WebSocketClosedError, asyncio.CancelledError):
            return
        except Exception as exc:  # said once to the client, then closed; never a traceback
            status, body = error_status(exc)
            await self._send({"kind": "error", "status": status, "error": body})
        self.close()

    async def _send_events(self, events: list[dict[str, Any]]) -> bool:
        for event in events:
            await self._send(event)
            self.after = int(event["seq"])
            if event.get("kind") == "state" and event.get("data", {}).get("state") in FINAL_STATES:
                return True
        return False

    async def _send(self, message: dict[str, Any]) -> None:
        await self.write_message(json.dumps(message))

    def on_message(self, message: str | bytes) -> None:
        pass  # the stream is one-way; the client speaks only by reconnecting with after=N


def handlers() -> list[tuple[str, type, dict[str, Any]]]:
    base = "/rapha/api"
    return [
        (f"{base}/edges", EdgesHandler, {}),
        (f"{base}/datasets", DatasetsHandler, {}),
        (f"{base}/policy", PolicyHandler, {}),
        (f"{base}/jobs", JobsHandler, {}),
        (f"{base}/jobs/{JOB_ID}", JobHandler, {}),
        (f"{base}/jobs/{JOB_ID}/edge", JobEdgeHandler, {}),
        (f"{base}/jobs/{JOB_ID}/verify", JobVerifyHandler, {}),
        (f"{base}/jobs/{JOB_ID}/(?P<what>receipt|metrics|weights)", JobOutputHandler, {}),
        (f"{base}/jobs/{JOB_ID}/events", JobEventsHandler, {}),
    ]
