"""Checking an edge's signed catalog and merging catalogs across edges.

A catalog decides where a researcher's code is sent. A forged or edited catalog could
lure a job (code plus signed request) to an edge that should never see it, or misstate a
price or a policy, so nothing in it is trusted until its DSSE signature verifies against
the edge key the researcher's server pinned in its configuration. Pure: bytes and dicts in,
dicts out, no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from ..protocol.dsse import verify_envelope
from ..protocol.environment import parse_environment
from ..protocol.errors import BadInput, RaphaError, VerificationError
from ..protocol.keys import PublicKey

CATALOG_PAYLOAD_TYPE = "application/vnd.rapha.catalog+json"
POLICY_PAYLOAD_TYPE = "application/vnd.rapha.policy+json"
# What the merged list shows of a dataset; everything else stays in the per-edge catalog.
MERGED_FIELDS = ("schema", "labels", "cohort_band", "price_per_record", "currency", "policy_summary",
                 "synthetic_seed", "max_records", "version", "sensitivity")


class CatalogRefused(VerificationError):
    """A catalog that is not signed by the pinned edge key, or does not parse."""


def verify_catalog(document: Any, pinned: PublicKey, site: str) -> dict[str, Any]:
    """The catalog inside ``document`` if the pinned key signed exactly those bytes."""
    catalog = _parse(_signed_payload(document, pinned, site, CATALOG_PAYLOAD_TYPE, "catalog"), site)
    if catalog.get("key_id") != pinned.key_id:
        raise CatalogRefused(f"the catalog of edge {site} names another signing key")
    return catalog


def _signed_payload(document: Any, pinned: PublicKey, site: str, payload_type: str, what: str) -> bytes:
    envelope = document.get("envelope") if isinstance(document, dict) else None
    if not isinstance(envelope, dict) or envelope.get("payloadType") != payload_type:
        raise CatalogRefused(f"edge {site} served no signed {what}")
    try:
        return verify_envelope(envelope, pinned)
    except RaphaError as exc:
        raise CatalogRefused(f"the {what} of edge {site} is not signed by its pinned key",
                             hint=f"the {what} was altered, or the edge key changed: check the pinned key") from exc


def verify_policy(document: Any, pinned: PublicKey, site: str) -> dict[str, Any]:
    """The edge's published policy, if the pinned key signed it: ``modules`` and
    ``data_json`` (whose digest is the one the edge states), ``researcher`` (the caller's
    registration), ``edge`` (demo, unsafe, attestation backend). A dry run with an
    altered policy would tell the researcher a wrong answer in the edge's name."""
    from ..protocol.policy import PolicyBundle

    payload = _signed_payload(document, pinned, site, POLICY_PAYLOAD_TYPE, "policy")
    try:
        published = json.loads(payload)
        modules, data_json = published["modules"], published["data_json"]
        if not isinstance(modules, dict) or not all(isinstance(v, str) for v in modules.values()):
            raise TypeError("modules")
        bundle = PolicyBundle.from_texts(modules, data_json if isinstance(data_json, str) else None)
    except (ValueError, KeyError, TypeError) as exc:
        raise CatalogRefused(f"the signed policy of edge {site} is malformed") from exc
    if published.get("key_id") != pinned.key_id or bundle.digest != published.get("bundle_sha256"):
        raise CatalogRefused(f"the signed policy of edge {site} does not match its stated digest or key")
    return {"modules": dict(bundle.modules), "data_json": bundle.data_json, "bundle_sha256": bundle.digest,
            "researcher": published.get("researcher") or {}, "edge": published.get("edge") or {},
            "edge_id": published.get("edge_id", ""), "site": site}


def _parse(payload: bytes, site: str) -> dict[str, Any]:
    try:
        catalog = json.loads(payload)
    except ValueError as exc:
        raise CatalogRefused(f"the signed catalog of edge {site} is not JSON") from exc
    if not isinstance(catalog, dict) or not isinstance(catalog.get("datasets"), list):
        raise CatalogRefused(f"the signed catalog of edge {site} lists no datasets")
    if not all(isinstance(d, dict) and isinstance(d.get("name"), str) for d in catalog["datasets"]):
        raise CatalogRefused(f"the signed catalog of edge {site} has a dataset without a name")
    if "environment" in catalog:
        try:
            parse_environment(catalog["environment"])
        except BadInput as exc:  # signed, yet not a listing: the edge is broken, trust none of it
            raise CatalogRefused(f"the signed catalog of edge {site} has a malformed environment listing: "
                                 f"{exc.message}") from exc
    return catalog


def merge_catalogs(catalogs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per dataset name, listing the edges that offer it and each edge's terms."""
    merged: dict[str, dict[str, Any]] = {}
    for site, catalog in catalogs.items():
        for entry in catalog["datasets"]:
            item = merged.setdefault(entry["name"], {"name": entry["name"], "edges": [], "offers": {}})
            item["edges"].append(site)
            item["offers"][site] = {k: entry.get(k) for k in MERGED_FIELDS}
    for item in merged.values():
        first = item["offers"][item["edges"][0]]
        # Shown at the top only where every edge agrees; otherwise read the offers.
        for key in ("schema", "price_per_record", "cohort_band", "policy_summary", "currency"):
            values = [json.dumps(item["offers"][s].get(key), sort_keys=True) for s in item["edges"]]
            item[key] = first.get(key) if len(set(values)) == 1 else None
    return sorted(merged.values(), key=lambda d: d["name"])


def offering_sites(catalogs: dict[str, dict[str, Any]], dataset: str) -> list[str]:
    return [site for site, catalog in catalogs.items() if any(d["name"] == dataset for d in catalog["datasets"])]


def offer(catalog: dict[str, Any], dataset: str) -> dict[str, Any]:
    for entry in catalog["datasets"]:
        if entry["name"] == dataset:
            return dict(entry)
    raise BadInput(f"dataset {dataset!r} is not in this catalog")
