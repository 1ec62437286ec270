"""The edge's listeners: the researcher HTTP service and, beside it, the admin socket
(``rapha-edge release``). Composed here, so that neither the service nor the admin routes
import each other's module.
"""

from __future__ import annotations

import logging
from typing import Any
from collections.abc import Callable

import tornado.netutil

from jupyter_rapha.protocol.errors import RaphaError

from .admin import AdminServer, admin_socket_path, edge_approval_desk, edge_desk
from .audit import RefusalTally
from .edge import Edge
from .service import DRAIN_BODY_BYTES, make_app, tls_context

log = logging.getLogger(__name__)


def _serve_admin(edge: Edge) -> Any:
    """The admin socket (``rapha-edge release``, ``rapha-edge approval``): a Unix socket in
    the state directory, never on the researcher listener."""
    return AdminServer(edge_desk(edge), admin_socket_path(edge.settings.state_dir), edge_approval_desk(edge))


async def serve(edge: Edge, host: str, port: int, ready: Callable[[int], None] | None = None) -> None:
    """Serve until cancelled. ``ready`` receives the bound port (useful with port 0)."""
    import asyncio

    from tornado.httpserver import HTTPServer

    refusals = RefusalTally(edge.audit)
    server = HTTPServer(make_app(edge, refusals), max_body_size=DRAIN_BODY_BYTES, xheaders=False,
                        ssl_options=tls_context(edge.settings))
    sockets = tornado.netutil.bind_sockets(port, address=host)
    server.add_sockets(sockets)
    bound = sockets[0].getsockname()[1]
    edge.start()
    admin = _serve_admin(edge)
    if ready:
        ready(bound)
    try:
        await asyncio.Event().wait()
    finally:
        server.stop()
        admin.stop()
        try:
            refusals.flush()  # before edge.stop, so the log's last refusals precede it
        except RaphaError as exc:  # a full disk must not keep the edge from closing its database
            log.error("audit: refusal summary not written at stop: %s", exc.diagnostics())
        edge.close()
