"""The edge's environment listing (edge_kernel/environment.py): measured from the job
interpreter, narrowed by settings, signed inside the catalog, and a tampered or malformed
listing refused by the researcher side."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import platform
import sys
from types import SimpleNamespace

import pytest

from edge_kernel.catalog import CatalogCache
from edge_kernel.data.registry import DatasetRegistry
from edge_kernel.environment import SiteEnvironment, listing, measure
from edge_kernel.settings import _settings
from jupyter_rapha.protocol.dsse import sign_envelope
from jupyter_rapha.protocol.canonical import canonical_json
from jupyter_rapha.protocol.environment import KEY_PACKAGES, parse_environment
from jupyter_rapha.protocol.errors import BadInput
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.routing.catalogs import CATALOG_PAYLOAD_TYPE, CatalogRefused, verify_catalog
from tests.edge.conftest_data import synthetic_dataset_entry


def site_settings(python: str = "", listed: tuple[str, ...] = ()) -> SimpleNamespace:
    return SimpleNamespace(edge_id="edge-1", currency="GBP", demo=True,
                           attestation=SimpleNamespace(backend="unsafe_software"),
                           sandbox=SimpleNamespace(python=python, listed_packages=listed))


def catalog_edge(tmp_path, settings: SimpleNamespace) -> SimpleNamespace:
    datasets = DatasetRegistry(tmp_path)
    datasets.add(synthetic_dataset_entry("cxr", "data/cxr"))
    return SimpleNamespace(settings=settings, key=PrivateKey.generate(), datasets=datasets,
                           environment=SiteEnvironment(settings))


def test_the_listing_is_what_the_job_interpreter_has():
    raw = measure(sys.executable)
    assert raw is not None and raw["python"] == platform.python_version()
    for name in ("torch", "numpy", "monai", "pydicom", "safetensors"):
        assert raw["packages"][name] == importlib.metadata.version(name), name
        assert name in raw["modules"] and name in raw["modules"][name]
    assert raw["modules"]["yaml"] == ["PyYAML"] and {"json", "asyncio"} <= set(raw["stdlib"])
    environment = parse_environment(listing(raw))
    assert environment.complete and len(environment.packages) == len(raw["packages"])
    assert [name for name, _ in environment.key_packages()] == list(KEY_PACKAGES)


def test_a_hospital_can_list_only_some_packages_and_the_key_ones_stay():
    raw = measure(sys.executable)
    narrowed = parse_environment(listing(raw, ["pyyaml"]))
    assert sorted(narrowed.packages) == sorted([*KEY_PACKAGES, "PyYAML"]) and not narrowed.complete
    assert set(narrowed.modules) == {m for m, dists in raw["modules"].items() if set(dists) & set(narrowed.packages)}
    assert narrowed.stdlib == frozenset(raw["stdlib"])


def test_an_interpreter_that_does_not_start_lists_nothing_and_the_catalog_says_none(tmp_path, caplog):
    edge = catalog_edge(tmp_path, site_settings(python=str(tmp_path / "no-python")))
    assert edge.environment.listing() is None
    assert "could not list its packages" in caplog.text
    catalog = json.loads(base64.b64decode(CatalogCache().signed(edge)["envelope"]["payload"]))
    assert "environment" not in catalog and catalog["datasets"][0]["name"] == "cxr"


def test_the_signed_catalog_carries_the_listing_and_a_tampered_one_fails(tmp_path):
    edge = catalog_edge(tmp_path, site_settings())
    document = CatalogCache().signed(edge)
    catalog = verify_catalog(document, edge.key.public, "north")
    assert parse_environment(catalog["environment"]).version("torch") == importlib.metadata.version("torch")
    payload = base64.b64decode(document["envelope"]["payload"])
    torch_entry = f'"torch":"{importlib.metadata.version("torch")}"'.encode()
    assert torch_entry in payload
    tampered = payload.replace(torch_entry, b'"torch":"9.9.9"')
    forged = {"envelope": {**document["envelope"], "payload": base64.b64encode(tampered).decode()}}
    with pytest.raises(CatalogRefused, match="not signed by its pinned key"):
        verify_catalog(forged, edge.key.public, "north")


def test_a_signed_but_malformed_listing_refuses_the_catalog(tmp_path):
    key = PrivateKey.generate()
    catalog = {"catalog_version": 1, "edge_id": "e", "key_id": key.key_id, "datasets": [],
               "environment": {"python": "3.11.7", "complete": True, "packages": {"torch": 2}, "modules": {}}}
    document = {"envelope": sign_envelope(canonical_json(catalog), CATALOG_PAYLOAD_TYPE, key)}
    with pytest.raises(CatalogRefused, match="malformed environment listing: .*package entry 'torch'"):
        verify_catalog(document, key.public, "north")


def test_listed_packages_is_read_from_edge_toml_and_checked(tmp_path):
    settings = _settings(tmp_path, {"edge": {"id": "e"}, "sandbox": {"listed_packages": ["scikit-learn", " PyYAML "]}})
    assert settings.sandbox.listed_packages == ("scikit-learn", "PyYAML")
    assert _settings(tmp_path, {"edge": {"id": "e"}}).sandbox.listed_packages == ()
    with pytest.raises(BadInput, match="sandbox.listed_packages in edge.toml must be a list"):
        _settings(tmp_path, {"edge": {"id": "e"}, "sandbox": {"listed_packages": "torch"}})
    with pytest.raises(BadInput, match="list of distribution names"):
        _settings(tmp_path, {"edge": {"id": "e"}, "sandbox": {"listed_packages": ["torch", 3]}})
