"""The kernel's gateways: find the Jupyter server this kernel runs under and talk to its
/rapha/api (``ServerGateway``), or, with no server, build the same ``EdgeProxy`` in-process.

Both are a ``gateway.Gateway`` (edges, datasets, policy, submit, status, jobs, cancel,
job_edge, output, follow), so the cell magic has one code path whether a server routes its
jobs or not.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import requests

from .client import EdgeClient, check_job_ref, error_from_response
from .gateway import Gateway
from .protocol.contract import TERMINAL_STATES as FINAL_STATES
from .protocol.errors import BadInput, Fault, RaphaError
from .protocol.keys import PrivateKey, load_public_key
from .routing.proxy import EdgeProxy, Site
from .routing.submission import Submission

URL_ENV, TOKEN_ENV = "RAPHA_JUPYTER_URL", "RAPHA_JUPYTER_TOKEN"
RECONNECTS = 5


def find_server() -> ServerGateway | None:
    """$RAPHA_JUPYTER_URL (+ $RAPHA_JUPYTER_TOKEN), else the running Jupyter server that
    started this kernel: kernels are its child processes, so its pid is our parent's."""
    if os.environ.get(URL_ENV):
        return ServerGateway(os.environ[URL_ENV], os.environ.get(TOKEN_ENV, ""))
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return None
    for info in list_running_servers():
        if info.get("pid") == os.getppid():
            gateway = ServerGateway(info["url"], info.get("token", ""))
            return gateway if gateway.has_extension() else None
    return None


def in_process(edge_url: str, key: PrivateKey) -> EdgeProxy:
    """No server: one edge, its key taken from the edge itself (trust on first use), and
    from there on the same catalog check, routing and signing as the extension."""
    info = EdgeClient(edge_url, key).edge_info()
    name = str(info.get("edge_id") or "edge")  # only a label here: the key below is what is trusted
    return EdgeProxy([Site(name, edge_url.rstrip("/"), load_public_key(str(info.get("public_key", ""))))], key)


def _ref(job_id: str) -> str:
    # Checked here too, so a short or odd id is refused with why, not with the server's 404.
    return quote(check_job_ref(job_id))


class ServerGateway(Gateway):
    def __init__(self, url: str, token: str, timeout: float = 60) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise BadInput(f"Jupyter server URL {url!r} must start with http:// or https://")
        self.base = url.rstrip("/") + "/rapha/api"
        self.token = token
        self.timeout = timeout
        self._session = requests.Session()

    def has_extension(self) -> bool:
        try:
            return self._session.get(self.base + "/edges", headers=self._headers(), timeout=10).status_code != 404
        except requests.RequestException:
            return False

    # ---- the gateway calls ---------------------------------------------------------
    def edges(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/edges")["edges"])

    def datasets(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/datasets")["datasets"])

    def policy(self, site: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/policy?site={quote(site, safe='')}"))

    def submit(self, submission: Submission) -> list[dict[str, Any]]:
        return list(self._json("POST", "/jobs", submission.to_dict())["jobs"])

    def status(self, job_id: str) -> dict[str, Any]:
        return self._object("GET", f"/jobs/{_ref(job_id)}")

    def jobs(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/jobs")["jobs"])

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._object("DELETE", f"/jobs/{_ref(job_id)}")

    def job_edge(self, job_id: str) -> dict[str, Any]:
        return self._object("GET", f"/jobs/{_ref(job_id)}/edge")

    def output(self, job_id: str, what: str) -> Any:
        content = self._request("GET", f"/jobs/{_ref(job_id)}/{what}")
        return content if what == "weights" else json.loads(content)

    def follow(self, job_id: str, after: int = 0, poll: float = 0.5) -> Iterator[dict[str, Any]]:
        """Events in order until the final state; a dropped stream resumes after the last seq."""
        failures = 0
        while True:
            try:
                for event in self._stream(job_id, after):
                    after, failures = int(event["seq"]), 0
                    yield event
                    if event.get("kind") == "state" and event.get("data", {}).get("state") in FINAL_STATES:
                        return
            except OSError as exc:  # websocket-client errors are OSErrors; resume below
                failures += 1
                if failures > RECONNECTS:
                    raise Fault(f"lost the event stream of job {job_id} {RECONNECTS} times in a row") from exc
            time.sleep(poll)

    # ---- transport -----------------------------------------------------------------
    def _stream(self, job_id: str, after: int) -> Iterator[dict[str, Any]]:
        import websocket  # websocket-client, a jupyter_server dependency

        url = "ws" + self.base[4:] + f"/jobs/{_ref(job_id)}/events?after={after}"
        ws = websocket.create_connection(url, header=[f"Authorization: token {self.token}"], timeout=self.timeout)
        try:
            while True:
                message = ws.recv()
                if not message:
                    return
                event = json.loads(message)
                if event.get("kind") == "error":
                    raise error_from_response(int(event["status"]), json.dumps(event).encode(), "the Jupyter server")
                yield event
        except websocket.WebSocketConnectionClosedException:
            return
        finally:
            ws.close()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"} if self.token else {}

    def _json(self, method: str, route: str, body: Any = None) -> Any:
        return json.loads(self._request(method, route, body))

    def _object(self, method: str, route: str) -> dict[str, Any]:
        answer = self._json(method, route)
        if not isinstance(answer, dict):
            raise Fault(f"the Jupyter server at {self.base} answered {route} with something other than a JSON object")
        return answer

    def _request(self, method: str, route: str, body: Any = None) -> bytes:
        try:
            response = self._session.request(method, self.base + route, headers=self._headers(), timeout=self.timeout,
                                             data=None if body is None else json.dumps(body))
        except requests.RequestException as exc:
            raise Fault(f"cannot reach the Jupyter server at {self.base}: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            error: RaphaError = error_from_response(response.status_code, response.content, "the Jupyter server")
            raise error
        return response.content
