"""Before a cell leaves, and its trip: the edges that would run it, the attestation each
one offers, a preflight of the cell against each edge's published policy, then submit and
collect through a gateway (a Jupyter server's extension, or the same proxy in-process).

Shared by ``%%rapha_train`` and ``rapha run`` so both say the same things before anything
is signed and sent. The preflight is advice given early, with the line of the cell it
concerns; the edge still decides, and it re-checks everything it is sent.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from .client import make_jobspec
from .preflight import Preflight, preflight
from .protocol.environment import CodeFile, Environment, parse_environment
from .protocol.errors import GateDenied, NotFound
from .protocol.policy import PolicyBundle
from .protocol.private import MODE_DP, job_mode
from .protocol.scan import DEFAULT_ALLOWED_MODULES
from .protocol.scan_job import place, scan_job
from .protocol.scan_rules import HIGH

if TYPE_CHECKING:
    from .gateway import Gateway
    from .private_preflight import ProgramCheck

Say = Callable[[str], None]
# The scan rules the default policy refuses at any severity (policies/data.json, network).
REFUSED_RULES = frozenset({"module-not-allowed"})
# What the dry run assumes the edge's attestation gate reports, per backend it offers.
_UNSAFE_ATTESTATION = {"backend": "unsafe_software", "outcome": "unsafe", "report_data_binding": "ok"}


class PreflightStopped(GateDenied):
    """The cell was stopped here, before it was signed or sent (``--no-preflight`` skips)."""

    gate = "preflight"


def target_edges(gateway: Gateway, dataset: str, wanted: str | None) -> list[dict[str, Any]]:
    """The configured edges whose verified catalog offers ``dataset`` (``wanted``: one by name or URL)."""
    offering = [e for e in gateway.edges() if dataset in (e.get("datasets") or [])]
    if wanted:
        offering = [e for e in offering if wanted.rstrip("/") in (e.get("name"), str(e.get("url", "")).rstrip("/"))]
    return offering


def attestation_line(entry: dict[str, Any]) -> str:
    """One line on the evidence an edge offers, from its signed catalog."""
    who = entry.get("edge_id") or entry.get("name")
    offer = entry.get("attestation") or {}
    if not offer.get("backend"):
        return f"edge {who} offers no attestation in its catalog"
    if offer["backend"] == "none":  # the edge has no backend in force: say so, not a backend name
        return f"edge {who} cannot attest: {offer.get('summary', '')}".rstrip(": ")
    mark = " (UNSAFE)" if offer.get("unsafe") else ""
    return f"edge {who} attests with {offer['backend']}{mark}: {offer.get('summary', '')}".rstrip(": ")


def check_cell(gateway: Gateway, request: Any, site: str | None, say: Say, run_preflight: bool = True) -> None:
    """Show each target edge's attestation, then preflight the cell there. Raises
    ``PreflightStopped`` with the explanations when the scan or the dry run refuses."""
    offers = {d["name"]: d for d in gateway.datasets()}.get(request.dataset, {}).get("offers", {})
    if run_preflight:
        check_includes(request, say)
    checked: dict[str, ProgramCheck] = {}  # by schema: edges offering the same schema check once
    for entry in target_edges(gateway, request.dataset, site):
        say(attestation_line(entry))
        if not run_preflight:
            say(f"preflight skipped (--no-preflight): edge {entry['name']} decides")
            continue
        offer = offers.get(entry["name"]) or {}
        result = preflight_at(gateway, entry["name"], request, offer, say, environment=edge_environment(entry, say))
        who = entry.get("edge_id") or entry["name"]
        if not result.likely_allowed:
            raise PreflightStopped(f"preflight stopped the cell before it left (the rules of edge {who}); "
                                   "fix what is named, or pass --no-preflight to let the edge decide",
                                   reasons=list(result.explanations) or ["the dry run refused the job"])
        for line in result.explanations:  # findings that do not refuse: notes
            say(line)
        if job_mode(request.code) == MODE_DP:
            say_budget(result, request.dataset, who, say)
            check_program(request, offer.get("schema") or {}, who, say, checked)


def say_budget(result: Preflight, dataset: str, who: str, say: Say) -> None:
    """The privacy budget the dry run gives a DP job on ``dataset`` at edge ``who``."""
    budget = (result.decision.obligations.get("privacy") if result.decision is not None else None) or {}
    if isinstance(budget.get("epsilon"), (int, float)) and isinstance(budget.get("delta"), (int, float)):
        say(f"edge {who}: privacy budget of {dataset}: epsilon {budget['epsilon']:g}, delta {budget['delta']:g} "
            "(the edge's DP-SGD trainer sets its noise for it and stops when it is spent)")


def check_program(request: Any, schema: dict[str, Any], who: str, say: Say,
                  checked: dict[str, ProgramCheck]) -> None:
    """A DP cell's model and loss, exported here on ``schema``-shaped synthetic records and
    checked as the edge's trainer checks them; ``PreflightStopped`` naming what to change
    when it could not train them privately."""
    from .private_preflight import check_private_cell, torch_available

    if not schema:
        say(f"edge {who} publishes no schema for {request.dataset}: the model is not exported before it leaves")
        return
    if not torch_available():
        say("torch is not installed in this kernel: the model is not exported before it leaves (the edge checks it)")
        return
    key = json.dumps(schema, sort_keys=True)
    if key not in checked:
        checked[key] = check_private_cell(request.code, schema, fields=request.fields, params=request.job_params(),
                                          epochs=request.epochs, first_line=request.cell_first_line,
                                          artifacts={a.name: a.path for a in getattr(request, "artifacts", ())})
    found = checked[key]
    if not found.trainable:
        raise PreflightStopped(f"preflight stopped the cell before it left: edge {who}'s trainer could not train "
                               "this model privately; change what is named, or pass --no-preflight to let the "
                               "edge decide", reasons=[*found.notes, str(found.refusal)])
    for line in found.notes:
        say(line)


def edge_environment(entry: dict[str, Any], say: Say | None = None) -> Environment | None:
    """The environment listing of an edge's verified catalog (``gateway.edges()``)."""
    if entry.get("environment") is None:
        if say is not None:
            say(f"edge {entry.get('edge_id') or entry['name']} lists no environment: the cell's imports are not "
                "checked before it leaves")
        return None
    return parse_environment(entry["environment"])


def check_includes(request: Any, say: Say) -> None:
    """The included files, by the edge's scanner: a finding the edge refuses stops the cell
    here, naming the file and line; others are notes."""
    includes = getattr(request, "includes", ())
    if not includes:
        return
    report = scan_job(request.code, includes)
    refused: list[str] = []
    notes: list[str] = []
    for path, finding in report.located():
        if not path:
            continue  # the cell's own findings: preflight_at explains them, with the line quoted
        line = f"{place(path, finding.line)}: {finding.message}"
        (refused if finding.severity == HIGH or finding.rule in REFUSED_RULES else notes).append(line)
    for line in notes:
        say(line)
    if refused:
        raise PreflightStopped("preflight stopped the cell before it left: an included file would be refused",
                               reasons=refused)


def preflight_at(gateway: Gateway, site: str, request: Any, offer: dict[str, Any], say: Say,
                 environment: Environment | None = None) -> Preflight:
    """The scanner, the cell's imports against ``environment`` (the edge's listing), and a
    dry run of the policy ``site`` publishes (scan and imports only if it publishes none)."""
    try:
        published = gateway.policy(site)
    except NotFound:
        say(f"edge {site} publishes no policy: preflight scans the cell only")
        return preflight(request.code, first_line=request.cell_first_line, environment=environment,
                         files=_included(request), site=f"edge {site}", allowed_modules=_allowed(request))
    job = _job_document(request, offer, str(published["researcher"].get("key_id") or "preflight"))
    edge = published.get("edge") or {}
    return preflight(request.code, job=job,
                     policy=PolicyBundle.from_texts(published["modules"], published["data_json"]),
                     researcher=published["researcher"], dataset=_dataset_facts(request.dataset, offer),
                     edge={"demo": bool(edge.get("demo")), "unsafe": list(edge.get("unsafe") or [])},
                     attestation=_UNSAFE_ATTESTATION if edge.get("attestation_backend") == "unsafe_software" else None,
                     first_line=request.cell_first_line, environment=environment, files=_included(request),
                     site=f"edge {site}", allowed_modules=_allowed(request))


def _allowed(request: Any) -> frozenset[str]:
    """The allowlist, and the modules the job brings itself (as the edge's scan gate counts them)."""
    return frozenset(DEFAULT_ALLOWED_MODULES) | {f.top_module for f in getattr(request, "includes", ())}


def _included(request: Any) -> list[CodeFile]:
    """The included files, for the import check against the edge's listing (their own module
    names count as present there)."""
    return [CodeFile(f.path, f.code, 1) for f in getattr(request, "includes", ())]


def _job_document(request: Any, offer: dict[str, Any], key_id: str) -> dict[str, Any]:
    # The same spec the proxy will sign (a fresh nonce aside), so the policy sees what the edge will.
    fields = list(request.fields or (offer.get("schema") or {}))
    spec = make_jobspec(request.code, request.dataset, fields, request.budget, request.max_seconds,
                        request.job_params(), key_id, cell_first_line=request.cell_first_line,
                        artifacts=tuple(a.entry() for a in getattr(request, "artifacts", ())),
                        includes=tuple(getattr(request, "includes", ())),
                        processes=getattr(request, "processes", 1))
    document = spec.to_dict()
    document.pop("code", None)
    for item in document.get("includes", []):
        item.pop("code", None)
    return document


def _dataset_facts(name: str, offer: dict[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = {"name": name, "fields": sorted(offer.get("schema") or {})}
    if offer.get("max_records") is not None:
        # The consented cohort is not published (only a band); assume it is at the limit.
        facts.update(max_records=offer["max_records"], cohort_size=offer["max_records"])
    for key, target in (("sensitivity", "sensitivity"), ("price_per_record", "price")):
        if offer.get(key) is not None:
            facts[target] = offer[key]
    return facts


def ship(gateway: Gateway, request: Any, site: str | None, all_sites: bool,
         collect_one: Callable[[str, str], Any]) -> list[Any]:
    """Submit through ``gateway`` and collect each job (one per site with ``all_sites``)."""
    from .training import submission_for

    jobs = gateway.submit(submission_for(request, site=site, all_sites=all_sites))
    return [collect_one(job["job_id"], job.get("site", "")) for job in jobs]
