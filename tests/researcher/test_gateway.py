"""The kernel's one interface to the proxy: ``Gateway``, answered by ``EdgeProxy`` in-process
and ``ServerGateway`` through a Jupyter server; each implements every call itself, with the
interface's parameters, and a server answer of the wrong shape is refused, not passed on."""

from __future__ import annotations

import http.server
import inspect
import json
import threading

import pytest

from jupyter_rapha.gateway import Gateway
from jupyter_rapha.gateways import ServerGateway
from jupyter_rapha.protocol.errors import Fault
from jupyter_rapha.routing.proxy import EdgeProxy

CALLS = sorted(name for name, value in vars(Gateway).items() if inspect.isfunction(value) and not name.startswith("_"))


def test_the_interface_names_every_call_the_kernel_makes():
    assert CALLS == ["cancel", "datasets", "edges", "follow", "job_edge", "jobs", "output", "policy", "status",
                     "submit"]


@pytest.mark.parametrize("implementation", [EdgeProxy, ServerGateway])
@pytest.mark.parametrize("call", CALLS)
def test_each_gateway_implements_the_call_itself_with_the_same_parameters(implementation, call):
    # An explicit Protocol subclass inherits the interface's `...` stub for a call it forgot
    # (answering None); the call must be its own.
    assert getattr(implementation, call) is not getattr(Gateway, call)
    mine = inspect.signature(getattr(implementation, call)).parameters
    theirs = inspect.signature(getattr(Gateway, call)).parameters
    assert [(p.name, p.kind, p.default) for p in mine.values()] == \
        [(p.name, p.kind, p.default) for p in theirs.values()]


class _Answers(http.server.BaseHTTPRequestHandler):
    body = b"[]"

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_DELETE = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("call", ["status", "cancel", "job_edge"])
def test_a_server_answer_that_is_not_an_object_is_a_fault(server, call):
    gateway = ServerGateway(server, "token")
    with pytest.raises(Fault, match="something other than a JSON object"):
        getattr(gateway, call)("0123456789abcdef")


def test_an_object_answer_passes(server, monkeypatch):
    monkeypatch.setattr(_Answers, "body", json.dumps({"job_id": "0123456789abcdef", "state": "running"}).encode())
    assert ServerGateway(server, "").status("0123456789abcdef")["state"] == "running"
