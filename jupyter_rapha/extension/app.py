"""The Jupyter server extension: the kernel proxy between notebooks and edges.

Configured by traitlets (``c.RaphaExtension.edges = [...]`` in jupyter_server_config.py,
or the JSON equivalent); the edge client and key store are ``Type`` traits, so tests and
deployments swap them by configuration, not by patching.
"""

from __future__ import annotations


from jupyter_server.extension.application import ExtensionApp
from traitlets import Dict, Enum, Float, List, Type, Unicode

from ..client import EdgeClient
from ..protocol.errors import RaphaError
from .backends import FileKeyStore
from .handlers import handlers
from ..routing.proxy import ROUTING_CHOICES, EdgeProxy, parse_sites


class RaphaExtension(ExtensionApp):
    name = "jupyter_rapha"
    load_other_extensions = True

    edges = List(Dict(), default_value=[], help=(
        "Edges this server may send jobs to: a list of {name, url, public_key}. public_key is the edge's "
        "Ed25519 key ('ed25519:BASE64') pinned out of band; catalogs and receipts are checked against it.")
    ).tag(config=True)
    key_path = Unicode("", help=(
        "Path of the researcher's Ed25519 private key (PEM). Empty: $RAPHA_KEY, else "
        "~/.config/rapha/researcher_ed25519.pem, as written by 'rapha keygen'.")).tag(config=True)
    routing = Enum(list(ROUTING_CHOICES), default_value="ask", help=(
        "When several edges offer the requested dataset and the request names neither site nor sites=all: "
        "'ask' refuses and lists the edges to choose from, 'first' sends it to the first configured edge, "
        "'all' runs one job at each.")).tag(config=True)
    request_timeout = Float(30.0, help="Seconds to wait for one answer from an edge.").tag(config=True)
    catalog_ttl = Float(30.0, help="Seconds a verified catalog is reused before it is fetched again.").tag(config=True)
    event_poll_interval = Float(0.5, help="Seconds between polls of an edge for new job events.").tag(config=True)
    edge_client_class = Type(default_value=EdgeClient, klass=EdgeClient, help=(
        "Class that talks to one edge: constructed as cls(url, key, timeout).")).tag(config=True)
    key_store_class = Type(default_value=FileKeyStore, klass=FileKeyStore, help=(
        "Class that holds the researcher key: constructed as cls(key_path), .key() returns it.")).tag(config=True)

    def initialize_settings(self) -> None:
        self.settings.update({"rapha_proxy": self._make_proxy(), "rapha_event_poll": self.event_poll_interval})

    def _make_proxy(self) -> EdgeProxy | RaphaError:
        try:
            key = self.key_store_class(self.key_path).key()
            return EdgeProxy(parse_sites(list(self.edges)), key, self.edge_client_class,
                             timeout=self.request_timeout, routing=self.routing, catalog_ttl=self.catalog_ttl)
        except RaphaError as exc:
            # The server still starts (other extensions keep working); every rapha request says why.
            self.log.error("rapha: the extension is not usable: %s", exc.diagnostics())
            return exc

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers())
