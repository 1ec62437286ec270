"""The kernel proxy's core: configured edges, their verified catalogs, routing and jobs.

The same class serves the Jupyter server extension's handlers and, with no server, the
cell magic in-process, so both paths route, sign and check catalogs identically. It holds
the researcher key: requests to edges are signed here, never in the browser.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterator

from ..client import UNKNOWN_KEY_HINT, EdgeClient, make_jobspec, require_finished, upload_artifacts, utc_now_text
from ..protocol.contract import TERMINAL_STATES as FINAL_STATES, JobState
from ..protocol.errors import BadInput, BudgetDenied, Fault, NotFound, RaphaError, UnknownKey
from ..gateway import Gateway
from ..protocol.keys import PrivateKey, PublicKey, load_public_key
from .catalogs import CatalogRefused, merge_catalogs, offer, offering_sites, verify_catalog, verify_policy
from .submission import Submission

ROUTING_CHOICES = ("ask", "first", "all")


@dataclass(frozen=True)
class Site:
    name: str
    url: str
    public_key: PublicKey


def parse_sites(entries: list[Any]) -> list[Site]:
    sites: list[Site] = []
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"url", "public_key"} <= set(entry):
            raise BadInput(f"edges[{number}] needs url and public_key (the edge key you pinned), and a name")
        name = str(entry.get("name") or f"edge{number + 1}")
        if any(s.name == name for s in sites):
            raise BadInput(f"two edges are named {name!r}; give each edge its own name")
        sites.append(Site(name, str(entry["url"]).rstrip("/"), load_public_key(str(entry["public_key"]))))
    return sites


class EdgeProxy(Gateway):
    def __init__(self, sites: list[Site], key: PrivateKey, client_class: type[EdgeClient] = EdgeClient,
                 timeout: float = 30, routing: str = "ask", catalog_ttl: float = 30) -> None:
        if routing not in ROUTING_CHOICES:
            raise BadInput(f"routing must be one of {', '.join(ROUTING_CHOICES)}")
        self.sites = {s.name: s for s in sites}
        self.key = key
        self.routing = routing
        self.catalog_ttl = catalog_ttl
        self.clients = {s.name: client_class(s.url, key, timeout) for s in sites}
        self.refused: dict[str, str] = {}  # site -> why its catalog is not trusted (or unreachable)
        self._refusals: dict[str, RaphaError] = {}
        self._catalogs: dict[str, dict[str, Any]] = {}
        self._fetched = 0.0
        self._job_sites: dict[str, str] = {}
        self._last_seen: dict[str, list[dict[str, Any]]] = {}  # site -> its jobs as it last listed them
        self.unreachable: dict[str, str] = {}  # site -> why it did not answer the last job listing

    # ---- edges and catalogs ---------------------------------------------------------
    def catalogs(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        """Catalogs that verified against their pinned key; the rest are in ``refused``."""
        if refresh or time.monotonic() - self._fetched > self.catalog_ttl:
            verified, refused = {}, {}
            for name, client in self.clients.items():
                try:
                    verified[name] = verify_catalog(client.catalog(), self.sites[name].public_key, name)
                except RaphaError as exc:  # one bad edge must not hide the others; it is reported
                    refused[name] = exc
            self._catalogs, self._refusals, self._fetched = verified, refused, time.monotonic()
            self.refused = {name: exc.diagnostics() for name, exc in refused.items()}
        return self._catalogs

    def _refusal(self, site: str) -> RaphaError:
        """Why ``site`` cannot be used now, said as what to do about it."""
        exc = self._refusals[site]
        if isinstance(exc, UnknownKey):  # not a trust problem: the hospital has not registered this key
            return UnknownKey(f"edge {site} does not know your key {self.key.key_id}", hint=UNKNOWN_KEY_HINT)
        if isinstance(exc, CatalogRefused):
            return CatalogRefused(f"edge {site} is not trusted right now: {exc.message}", hint=exc.hint)
        return type(exc)(f"edge {site} cannot be used right now: {exc.message}", hint=exc.hint)

    def edges(self) -> list[dict[str, Any]]:
        catalogs = self.catalogs(refresh=True)
        return [self._edge_entry(name, catalogs.get(name)) for name in self.sites]

    def _edge_entry(self, name: str, catalog: dict[str, Any] | None) -> dict[str, Any]:
        site = self.sites[name]
        entry: dict[str, Any] = {"name": name, "url": site.url, "public_key": site.public_key.to_text(),
                                 "key_id": site.public_key.key_id, "healthy": catalog is not None,
                                 "catalog": "verified" if catalog else "refused", "problem": self.refused.get(name)}
        if catalog is not None:
            entry["edge_id"] = catalog.get("edge_id")
            entry["attestation"] = catalog.get("attestation")
            entry["datasets"] = [d["name"] for d in catalog["datasets"]]
            entry["environment"] = catalog.get("environment")  # None from an edge that lists none
        return entry

    def datasets(self) -> list[dict[str, Any]]:
        return merge_catalogs(self.catalogs())

    def policy(self, site: str) -> dict[str, Any]:
        """The edge's published policy bundle, checked against its pinned key (preflight)."""
        name = self.site_name(site)
        return verify_policy(self.clients[name].policy(), self.sites[name].public_key, name)

    # ---- routing and submission -----------------------------------------------------
    def route(self, submission: Submission) -> list[str]:
        catalogs = self.catalogs()
        offering = offering_sites(catalogs, submission.dataset)
        if submission.site:
            site = self.site_name(submission.site)
            if site in self._refusals:
                raise self._refusal(site)
            if site not in offering:
                raise NotFound(f"edge {site} offers no dataset named {submission.dataset!r}")
            return [site]
        if not offering and self._refusals:
            raise self._no_usable_edge(submission.dataset)
        if not offering:
            raise NotFound(f"no configured edge offers a dataset named {submission.dataset!r}",
                           hint="GET /rapha/api/datasets lists what the edges offer")
        if submission.all_sites or self.routing == "all" or len(offering) == 1:
            return offering
        if self.routing == "first":
            return offering[:1]
        raise BadInput(f"{len(offering)} edges offer {submission.dataset!r} ({', '.join(offering)}): "
                       "choose one with site=NAME or run at every one with sites=all")

    def _no_usable_edge(self, dataset: str) -> RaphaError:
        """Every edge asked, and why each could not offer ``dataset``."""
        answers = [f"{name}: {self._refusal(name).diagnostics()}" if name in self._refusals
                   else f"{name}: its catalog has no {dataset!r}" for name in self.sites]
        refusals = list(self._refusals.values())
        cls = UnknownKey if all(isinstance(e, UnknownKey) for e in refusals) else CatalogRefused
        return cls(f"no edge can take a job on dataset {dataset!r}; asked {', '.join(self.sites)}: "
                   + "; ".join(answers))

    def site_name(self, wanted: str) -> str:
        """A configured edge by name, or by URL (the magic's --edge)."""
        for site in self.sites.values():
            if wanted in (site.name, site.url, site.url + "/"):
                return site.name
        raise NotFound(f"no configured edge named {wanted!r}; configured: {', '.join(self.sites) or 'none'}")

    def submit(self, submission: Submission) -> list[dict[str, Any]]:
        sites = self.route(submission)
        entries = {site: offer(self._catalogs[site], submission.dataset) for site in sites}
        for site, entry in entries.items():  # the edge's published limit, checked before anything is signed
            if submission.budget > int(entry.get("max_records") or submission.budget):
                raise BudgetDenied(f"budget {submission.budget} is over what edge {site} allows",
                                   reasons=[f"edge {site} allows at most {entry['max_records']} records per job"])
        return [self._submit_one(site, submission, entries[site]) for site in sites]

    def _submit_one(self, site: str, submission: Submission, entry: dict[str, Any]) -> dict[str, Any]:
        fields = list(submission.fields or (entry.get("schema") or {}))
        if not fields:
            raise Fault(f"edge {site} lists dataset {submission.dataset!r} without a schema")
        artifacts = upload_artifacts(self.clients[site], submission.artifacts)
        spec = make_jobspec(submission.code, submission.dataset, fields, submission.budget, submission.max_seconds,
                            submission.job_params(), self.key.key_id, cell_first_line=submission.cell_first_line,
                            artifacts=artifacts, includes=submission.includes, processes=submission.processes)
        job_id = self.clients[site].submit(spec)
        self._job_sites[job_id] = site
        return {"job_id": job_id, "site": site, "state": JobState.SUBMITTED.value}

    # ---- jobs -----------------------------------------------------------------------
    def locate(self, job_id: str) -> str:
        """The edge that runs ``job_id``; asks every edge once after a restart forgot it."""
        return self.resolve(job_id)[0]

    def resolve(self, job_ref: str) -> tuple[str, str]:
        """(site, full job id) of the job named by its id or a unique prefix of it. Each
        edge resolves a prefix among this researcher's jobs only; a prefix that matches at
        several edges is refused with how many match."""
        if job_ref in self._job_sites:
            return self._job_sites[job_ref], job_ref
        found: list[tuple[str, str]] = []
        for name, client in self.clients.items():
            try:
                full = str(client.status(job_ref).get("job_id") or job_ref)
            except NotFound:
                continue
            found.append((name, full))
            if full == job_ref:  # a whole id is unique: no need to ask the other edges
                break
        if not found:
            raise NotFound(f"no job {job_ref} at any configured edge")
        if len(found) > 1:
            raise BadInput(f"{len(found)} of your jobs start with {job_ref} (at {', '.join(s for s, _ in found)}); "
                           "give more characters of the id")
        site, full = found[0]
        self._job_sites[full] = site
        return site, full

    def jobs(self) -> list[dict[str, Any]]:
        """Every edge's jobs. An edge that does not answer does not hide the others: its
        jobs are listed as last seen, marked ``edge_unreachable`` (and the edge named in
        ``unreachable``), so no job reads "running" after its edge has gone quiet."""
        listed: list[dict[str, Any]] = []
        unreachable: dict[str, str] = {}
        for name, client in self.clients.items():
            try:
                statuses = client.jobs()
            except Fault as exc:
                unreachable[name] = exc.message
                listed += [{**status, "edge_unreachable": True} for status in self._last_seen.get(name, [])]
                continue
            seen = utc_now_text()
            self._last_seen[name] = [{**status, "site": name, "last_seen": seen} for status in statuses]
            for status in self._last_seen[name]:
                self._job_sites[str(status.get("job_id"))] = name
            listed += self._last_seen[name]
        self.unreachable = unreachable
        return sorted(listed, key=lambda j: str(j.get("submitted", "")), reverse=True)

    def status(self, job_id: str) -> dict[str, Any]:
        site, job_id = self.resolve(job_id)
        return {**self.clients[site].status(job_id), "site": site}

    def cancel(self, job_id: str) -> dict[str, Any]:
        site, job_id = self.resolve(job_id)
        return {**self.clients[site].cancel(job_id), "site": site}

    def events(self, job_id: str, after: int = 0) -> dict[str, Any]:
        site, job_id = self.resolve(job_id)
        return self.clients[site].events(job_id, after)

    def follow(self, job_id: str, after: int = 0, poll: float = 0.5) -> Iterator[dict[str, Any]]:
        """Every event after ``after``, in order, until the job's final state."""
        job_id = self.resolve(job_id)[1]
        while True:
            answer = self.events(job_id, after)
            for event in answer.get("events", []):
                after = int(event["seq"])
                yield event
                if event.get("kind") == "state" and event.get("data", {}).get("state") in FINAL_STATES:
                    return
            time.sleep(poll)

    def output(self, job_id: str, what: str) -> Any:
        """receipt, metrics or weights of a completed job; a denied job raises its gate refusal."""
        site, job_id = self.resolve(job_id)
        client = self.clients[site]
        status = client.status(job_id)
        require_finished(status, NotFound(f"job {job_id} has no {what} yet (state: {status.get('state')})"))
        return {"receipt": client.receipt, "metrics": client.metrics, "weights": client.weights}[what](job_id)

    def verify(self, job_id: str) -> dict[str, Any]:
        """The job's receipt checked here, as ``rapha verify`` would: against the edge key
        pinned for its site (never one the edge sends now), with its weights and metrics,
        and its anchor looked up on the edge's chain endpoint."""
        from ..verify import report_dict, verify_document

        job_id = self.resolve(job_id)[1]
        edge = self.job_edge(job_id)
        site = edge["site"]
        receipt, weights, metrics = (self.output(job_id, what) for what in ("receipt", "weights", "metrics"))
        report = verify_document(receipt, self.sites[site].public_key, weights=weights, metrics=metrics,
                                 rpc_url=edge["chain_rpc"])
        return {**report_dict(report), "job_id": job_id, "site": site}

    def job_edge(self, job_id: str) -> dict[str, Any]:
        """What a verifier needs: the pinned key of the job's edge and its chain endpoint."""
        from ..training import chain_rpc_url

        site = self.locate(job_id)
        info = self.clients[site].edge_info()
        pinned = self.sites[site].public_key
        if info.get("public_key") != pinned.to_text():
            raise CatalogRefused(f"edge {site} now presents a key other than the one pinned")
        return {"site": site, "url": self.sites[site].url, "public_key": pinned.to_text(),
                "chain_rpc": chain_rpc_url(self.sites[site].url, info)}
