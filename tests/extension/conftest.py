"""Fixtures for the Jupyter server extension: two real edges with different catalogs, a
researcher key registered at both, and the extension configured through jp_server_config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_kernel.data.registry import DatasetRegistry, parse_dataset
from jupyter_rapha.protocol.keys import PrivateKey
from tests.extension.server_session import jupyter  # noqa: F401 (a fixture: a real jupyter server)
from tests.harness import init_edge, start_edge

# The pytest-jupyter plugin is registered in tests/conftest.py (pytest allows it only there).


def add_dataset(root: Path, name: str, max_records: int = 100_000, price: str = "0.05") -> None:
    """A second dataset over the same synthetic records, so the two edges' catalogs differ."""
    registry = DatasetRegistry(root)
    base = registry.get("synthetic-cxr").to_dict()
    registry.add(parse_dataset({**base, "name": name, "max_records": max_records, "price_per_record": price}))
    policy_data = root / "policies" / "data.json"  # and released for training by this edge's policy
    data = json.loads(policy_data.read_text())
    data["hospital"]["datasets"][name] = data["hospital"]["datasets"]["synthetic-cxr"]
    release = data["hospital"]["release"]["datasets"]  # and released as the demo's (else: review)
    release[name] = release["synthetic-cxr"]
    policy_data.write_text(json.dumps(data, indent=2))


@pytest.fixture(scope="session")
def researcher_key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture(scope="session")
def two_edges(tmp_path_factory, researcher_key):
    """Edge "north" offers synthetic-cxr and cxr-north; edge "south" synthetic-cxr and cxr-south."""
    running = []
    try:
        for name in ("north", "south"):
            root = tmp_path_factory.mktemp(name) / "edge"
            init_edge(root, records=32, researcher=researcher_key)
            add_dataset(root, f"cxr-{name}", max_records=20 if name == "south" else 100_000)
            running.append(start_edge(root))
        yield {"north": running[0], "south": running[1]}
    finally:
        for edge in running:
            edge.stop()


def edge_public_key(edge) -> str:
    import requests

    return requests.get(edge.url + "/v1/edge", timeout=10).json()["public_key"]


@pytest.fixture(scope="session")
def edge_config(two_edges, researcher_key, tmp_path_factory) -> dict:
    key_path = tmp_path_factory.mktemp("researcher") / "researcher.pem"
    key_path.write_bytes(researcher_key.to_pem())
    key_path.chmod(0o600)
    edges = [{"name": name, "url": edge.url, "public_key": edge_public_key(edge)} for name, edge in two_edges.items()]
    return {"edges": edges, "key_path": str(key_path), "event_poll_interval": 0.1, "catalog_ttl": 0.0}


@pytest.fixture
def rapha_config(edge_config, request) -> dict:
    """Per-test extension settings: a test overrides traits with
    ``@pytest.mark.parametrize("rapha_config", [{...}], indirect=True)``."""
    return {**json.loads(json.dumps(edge_config)), **getattr(request, "param", {})}


@pytest.fixture
def jp_server_config(rapha_config):
    return {"ServerApp": {"jpserver_extensions": {"jupyter_rapha": True}},
            "RaphaExtension": rapha_config}
