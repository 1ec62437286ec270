"""The read path's caches keep freshness exactly: cached registry files and the cached
signed catalog follow every change, and an error is never cached."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from edge_kernel import parsed_file
from edge_kernel.catalog import CATALOG_PAYLOAD_TYPE, CatalogCache
from edge_kernel.config_files import ConfigFault
from edge_kernel.data.registry import DatasetRegistry
from edge_kernel.data.synth import synthetic_dataset_entry
from edge_kernel.researchers import ResearcherRegistry
from jupyter_rapha.protocol.dsse import verify_envelope
from jupyter_rapha.protocol.errors import UnknownKey
from jupyter_rapha.protocol.keys import PrivateKey


def write_researchers(path, researchers) -> None:
    path.write_text(json.dumps({"researchers": [{"name": n, "public_key": k.public.to_text()}
                                                for n, k in researchers]}))


def rewrite_in_place(path, old: str, new: str) -> None:
    text = path.read_text()
    assert len(old) == len(new) and old in text
    with open(path, "r+") as handle:  # same inode, same size: only the times tell
        handle.write(text.replace(old, new))


def test_a_cached_registry_follows_an_in_place_edit(tmp_path, monkeypatch):
    monkeypatch.setattr(parsed_file, "STABLE_SECONDS", 0.05)
    alice, bob, carol = (PrivateKey.generate() for _ in range(3))
    write_researchers(tmp_path / "researchers.json", [("alice", alice), ("bob", bob)])
    time.sleep(0.1)
    registry = ResearcherRegistry(tmp_path)
    assert registry.by_key_id(bob.key_id).name == "bob"
    assert registry._file._cached is not None  # cached from here on
    assert registry.by_key_id(bob.key_id).name == "bob"
    time.sleep(0.02)
    rewrite_in_place(tmp_path / "researchers.json", bob.public.to_text(), carol.public.to_text())
    with pytest.raises(UnknownKey):
        registry.by_key_id(bob.key_id)  # revoked from the next lookup on
    assert registry.by_key_id(carol.key_id).name == "bob"


def test_a_file_changed_moments_ago_is_not_cached(tmp_path):
    alice, bob, carol = (PrivateKey.generate() for _ in range(3))
    write_researchers(tmp_path / "researchers.json", [("alice", alice), ("bob", bob)])
    registry = ResearcherRegistry(tmp_path)
    assert registry.by_key_id(bob.key_id).name == "bob"
    assert registry._file._cached is None  # too fresh to trust its times
    rewrite_in_place(tmp_path / "researchers.json", bob.public.to_text(), carol.public.to_text())
    with pytest.raises(UnknownKey):
        registry.by_key_id(bob.key_id)


def test_a_broken_registry_is_a_fault_on_every_lookup_until_fixed(tmp_path):
    alice = PrivateKey.generate()
    path = tmp_path / "researchers.json"
    path.write_text(json.dumps({"researchers": [{"name": "alice", "public_key": alice.public.to_text()},
                                                {"name": "broken", "public_key": "ed25519:AAAA"}]}))
    registry = ResearcherRegistry(tmp_path)
    for _ in range(2):  # a fault is never cached as an answer
        with pytest.raises(ConfigFault):
            registry.by_key_id(alice.key_id)
    write_researchers(path, [("alice", alice)])
    assert registry.by_key_id(alice.key_id).name == "alice"


def catalog_edge(tmp_path):
    settings = SimpleNamespace(edge_id="edge-1", currency="GBP", demo=True,
                               attestation=SimpleNamespace(backend="unsafe_software"))
    datasets = DatasetRegistry(tmp_path)
    datasets.add(synthetic_dataset_entry("cxr", "data/cxr"))
    return SimpleNamespace(settings=settings, key=PrivateKey.generate(), datasets=datasets)


def catalog_of(document, key) -> dict:
    return json.loads(verify_envelope(document["envelope"], key.public))


def test_the_cached_catalog_is_signed_again_as_soon_as_it_changes(tmp_path):
    edge, cache = catalog_edge(tmp_path), CatalogCache()
    first = cache.signed(edge)
    assert cache.signed(edge) is first  # unchanged offer: the same signed envelope
    assert first["envelope"]["payloadType"] == CATALOG_PAYLOAD_TYPE
    edge.datasets.add(synthetic_dataset_entry("cxr", "data/cxr", price_per_record="0.02"), replace=True)
    changed = catalog_of(cache.signed(edge), edge.key)
    assert [d["price_per_record"] for d in changed["datasets"]] == ["0.02"]
    assert changed["attestation"]["backend"] == "unsafe_software"
    edge.settings.demo = False  # the software stand-in is no longer in force: the offer changes
    assert catalog_of(cache.signed(edge), edge.key)["attestation"]["backend"] == "none"
