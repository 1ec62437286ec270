"""The edge's catalog: what it offers, signed with the edge key.

A researcher's Jupyter server routes jobs by this document, so it must not be possible to
lure a job to an edge by forging or editing a catalog on the way: it is a DSSE envelope
over canonical JSON, and the extension checks it against the edge key it pinned.

The catalog says what a dataset looks like (schema, a seed for synthetic samples), what it
costs and what the edge's policy asks, in plain words, and what a job there can import
(the job interpreter's Python version and packages, ``environment.py``). It never carries record data: the
cohort size is a band, not a count, so a catalog cannot be used to watch admissions.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from jupyter_rapha.protocol.canonical import canonical_json
from jupyter_rapha.protocol.dsse import sign_envelope
from jupyter_rapha.protocol.keys import PrivateKey

from .audit import utc_now
from .data.registry import Dataset

CATALOG_PAYLOAD_TYPE = "application/vnd.rapha.catalog+json"
CATALOG_VERSION = 1
# Bands, not counts: a catalog is public to every registered researcher.
_BANDS = ((100, "<100"), (1_000, "100-999"), (10_000, "1000-9999"), (100_000, "10000-99999"))


def cohort_band(max_records: int) -> str:
    for limit, band in _BANDS:
        if max_records < limit:
            return band
    return ">=100000"


def synthetic_seed(edge_id: str, dataset: Dataset) -> int:
    """A stable seed per dataset version, so every researcher's dry run sees the same samples."""
    digest = hashlib.sha256(f"{edge_id}\0{dataset.name}\0{dataset.version}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def policy_summary(dataset: Dataset) -> list[str]:
    labels = ", ".join(sorted(dataset.labels)) or "none"
    return [
        "Your cell runs sealed: no network, no files of the hospital, only the records it is granted.",
        f"Fields that can cross into a job: {', '.join(dataset.fields)}; labels: {labels}.",
        "Identifiers never cross; records are pseudonymised and counted once each against your budget.",
        f"At most {dataset.max_records} records per job; each record used costs {dataset.price_per_record}.",
        "Only weights, declared metrics and a signed receipt come back; printed output stays here.",
    ]


def dataset_entry(edge_id: str, dataset: Dataset, currency: str) -> dict[str, Any]:
    return {"name": dataset.name, "version": dataset.version, "schema": dataset.schema(),
            "labels": sorted(dataset.labels), "synthetic_seed": synthetic_seed(edge_id, dataset),
            "price_per_record": dataset.price_per_record, "currency": currency,
            "max_records": dataset.max_records, "cohort_band": cohort_band(dataset.max_records),
            "sensitivity": dataset.sensitivity, "description": dataset.description,
            "policy_summary": policy_summary(dataset)}


def attestation_offer(backend: str) -> dict[str, Any]:
    """What the edge attests with: ``backend`` is the one in force (``backend_in_force``),
    "" when none is. The software stand-in proves nothing about the machine; say so in the
    offer itself."""
    if not backend:
        return {"backend": "none", "unsafe": False,
                "summary": "no TEE on this edge and not in demo mode: every job is refused at attestation"}
    unsafe = backend.startswith("unsafe")
    return {"backend": backend, "unsafe": unsafe,
            "summary": "software stand-in, no hardware evidence (demo only)" if unsafe
            else f"hardware-backed quote ({backend}) bound to each job's nonce"}


def _backend_in_force(settings: Any) -> str:
    from .attestation.backends import backend_in_force

    return backend_in_force(settings.attestation.backend, demo=bool(settings.demo))


def build_catalog(edge_id: str, key: PrivateKey, datasets: list[Dataset], currency: str,
                  attestation_backend: str, environment: dict[str, Any] | None = None) -> dict[str, Any]:
    """``environment`` is the job interpreter's listing (``environment.py``); None when it
    could not be measured, and then the catalog has none (notebooks check no imports)."""
    catalog = {"catalog_version": CATALOG_VERSION, "edge_id": edge_id, "key_id": key.key_id, "issued": utc_now(),
               "datasets": [dataset_entry(edge_id, d, currency) for d in datasets],
               "attestation": attestation_offer(attestation_backend)}
    if environment is not None:
        catalog["environment"] = environment
    return catalog


def sign_catalog(catalog: dict[str, Any], key: PrivateKey) -> dict[str, Any]:
    """The catalog as a DSSE envelope over its canonical JSON bytes."""
    return {"envelope": sign_envelope(canonical_json(catalog), CATALOG_PAYLOAD_TYPE, key)}


def signed_catalog(edge: Any) -> dict[str, Any]:
    return sign_catalog(current_catalog(edge), edge.key)


def current_catalog(edge: Any) -> dict[str, Any]:
    settings = edge.settings
    site = getattr(edge, "environment", None)
    return build_catalog(settings.edge_id, edge.key, list(edge.datasets.all().values()), settings.currency,
                         _backend_in_force(settings), site.listing() if site is not None else None)


class CatalogCache:
    """The signed catalog, signed again only when what it says changes.

    Every request still builds the catalog from the registry as it is now and compares
    it, all but its "issued" time, with what was signed last; only an identical catalog
    is served from the cache. So a changed dataset, price or attestation backend is in
    the very next answer, and a served envelope is always the edge's signature over the
    current offer; "issued" is then when that offer was first signed. Signing (canonical
    JSON, Ed25519) was most of a catalog request's cost.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._content: dict[str, Any] | None = None
        self._signed: dict[str, Any] | None = None

    def signed(self, edge: Any) -> dict[str, Any]:
        catalog = current_catalog(edge)
        content = {name: value for name, value in catalog.items() if name != "issued"}
        with self._lock:
            if self._signed is None or content != self._content:
                self._content, self._signed = content, sign_catalog(catalog, edge.key)
            return self._signed


POLICY_PAYLOAD_TYPE = "application/vnd.rapha.policy+json"
POLICY_DOCUMENT_VERSION = 1


def published_policy(edge_id: str, key: PrivateKey, bundle: Any, researcher: Any, settings: Any) -> dict[str, Any]:
    """The policy bundle as the policy gate holds it, for the notebook's dry run: its
    module texts, data.json and digest, the caller's own registration (roles, purposes:
    the policy decides on them) and the edge facts the policy reads. Nothing about other
    researchers or about records."""
    return {"policy_version": POLICY_DOCUMENT_VERSION, "edge_id": edge_id, "key_id": key.key_id,
            "issued": utc_now(), "bundle_sha256": bundle.digest, "modules": dict(bundle.modules),
            "data_json": bundle.data_json,
            "researcher": {"name": researcher.name, "key_id": researcher.key_id,
                           "roles": list(researcher.roles), "purposes": list(researcher.purposes)},
            "edge": {"demo": bool(settings.demo), "unsafe": list(settings.unsafe),
                     "attestation_backend": _backend_in_force(settings)}}


def signed_policy(edge: Any, researcher: Any) -> dict[str, Any]:
    """``{"envelope": DSSE}`` over the published policy, signed like the catalog."""
    from jupyter_rapha.protocol.errors import NotFound

    gate = next((g for g in edge.gates if getattr(g, "name", "") == "policy"), None)
    bundle = getattr(gate, "bundle", None)
    if bundle is None:  # the gate denies every job then; there is nothing to dry-run
        raise NotFound("this edge has no loadable policy bundle to publish")
    document = published_policy(edge.settings.edge_id, edge.key, bundle, researcher, edge.settings)
    return {"envelope": sign_envelope(canonical_json(document), POLICY_PAYLOAD_TYPE, edge.key)}
